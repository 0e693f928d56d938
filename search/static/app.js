// recipekit serve: the page's only script (no dependencies, nothing fetched from outside).
// Data from the server is only ever put into the page as text (textContent, attributes), never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const K = 12;  // results asked for per query
let chosen = null;  // the photo to send: chosen in the file field or dropped on the drop zone
let previewUrl = null;
let hasGenerator = false;  // a [gan] run: an ingredient query also shows the photo its generator makes

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setLoading(on) {
  $("loading").hidden = !on;
  $("results").setAttribute("aria-busy", on ? "true" : "false");
  document.body.classList.toggle("busy", on);
  for (const id of ["photo-submit", "ingredients-submit"]) $(id).disabled = on;
}

function card(hit) {
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.recipeId = hit.recipe_id;
  el.dataset.partition = hit.partition || "";
  el.tabIndex = 0;
  el.setAttribute("role", "button");
  el.title = "open the recipe";
  if (hit.photo) {
    const img = document.createElement("img");
    img.src = hit.photo;
    img.alt = hit.title;
    img.loading = "eager";
    el.appendChild(img);
  } else {
    const none = document.createElement("div");
    none.className = "nophoto";
    none.textContent = "no photo";
    el.appendChild(none);
  }
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = hit.title || "(no title)";
  const meta = document.createElement("div");
  meta.className = "meta";
  const cls = hit.class_name && hit.class_name !== "background" ? " · " + hit.class_name : "";
  meta.textContent = "#" + hit.rank + " · score " + hit.score.toFixed(3) + cls + (hit.partition ? " · " + hit.partition : "");
  body.append(title, meta);
  el.appendChild(body);
  el.addEventListener("click", () => openRecipe(hit.recipe_id));
  el.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      openRecipe(hit.recipe_id);
    }
  });
  return el;
}

function showHits(heading, data) {
  const hits = data.hits;
  const asked = data.query && data.query.k ? data.query.k : K;
  $("results").replaceChildren(...hits.map(card));
  $("results-title").textContent = hits.length ? heading : heading + ": nothing found";
  $("results-title").hidden = false;
  const count = $("results-count");
  if (!hits.length) {
    count.textContent = "No result of the " + asked + " asked: nothing passes the filters (partition, class, without).";
  } else if (hits.length < asked) {
    count.textContent = "Only " + hits.length + " of the " + asked + " results asked: no more pass the filters.";
  } else {
    count.textContent = hits.length + " results.";
  }
  count.classList.toggle("short", hits.length < asked);
  count.hidden = false;
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  let data;
  try {
    data = await response.json();
  } catch (e) {
    throw new Error("the server answered " + response.status + " without JSON");
  }
  if (!response.ok || data.error) {
    throw new Error(data.error || "the server answered " + response.status);
  }
  return data;
}

async function call(url, options, heading) {
  clearError();
  setLoading(true);
  showGenerated(null);
  try {
    showHits(heading, await getJson(url, options));
    return true;
  } catch (e) {
    $("results").replaceChildren();
    $("results-title").hidden = true;
    $("results-count").hidden = true;
    showError(e.message || String(e));
    return false;
  } finally {
    setLoading(false);
  }
}

function partitionNote() {
  const p = $("partition").value;
  return p && p !== "all" ? " (" + p + " only)" : "";
}

// -- the photo: file field or drag and drop, with a preview ------------------------------------
function choose(file) {
  chosen = file || null;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  const preview = $("preview");
  if (chosen && chosen.type.startsWith("image/")) {
    previewUrl = URL.createObjectURL(chosen);
    preview.src = previewUrl;
    preview.hidden = false;
    $("drop-hint").textContent = chosen.name;
  } else {
    preview.hidden = true;
    preview.removeAttribute("src");
    $("drop-hint").textContent = chosen ? chosen.name + " (no preview)" : "Drop a food photo here, or click to choose one (JPEG, PNG or WebP)";
  }
}

$("photo").addEventListener("change", () => choose($("photo").files[0]));
const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const files = event.dataTransfer && event.dataTransfer.files;
  if (!files || !files.length) {
    showError("drop a photo file (JPEG, PNG or WebP)");
    return;
  }
  try {
    $("photo").files = files;  // the file field names the dropped photo too
  } catch (e) {
    // an old browser: the drop zone still holds it
  }
  choose(files[0]);
});

$("photo-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!chosen) {
    showError("choose a photo first");
    return;
  }
  const body = new FormData();
  body.append("image", chosen, chosen.name);
  const params = new URLSearchParams({ k: String(K), partition: $("partition").value });
  call("/api/image?" + params, { method: "POST", body }, "Recipes for " + chosen.name + partitionNote());
});

// -- ingredients -------------------------------------------------------------------------------
$("ingredients-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("q").value.trim();  // an empty one goes to the server too: one place says what is wrong
  const without = $("without").value.trim();
  const mode = $("mode-remove").checked ? "remove" : "exclude";
  const params = new URLSearchParams({ q, class: $("class").value, partition: $("partition").value, k: String(K) });
  if (without) params.set(mode, without);
  const note = without ? (mode === "remove" ? " with " + without + " removed from the query" : " without " + without) : "";
  call("/api/ingredients?" + params, {}, "Dishes with " + q + note + partitionNote())
    .then((ok) => showGenerated(ok && hasGenerator ? "/api/generated?" + params : null));
});

// The photo a [gan] run's generator makes from the query's embedding, beside the results.
function showGenerated(url) {
  const box = $("generated");
  if (!url) {
    box.hidden = true;
    $("generated-img").removeAttribute("src");
    return;
  }
  $("generated-img").src = url;
  box.hidden = false;
}

// -- one recipe, opened from its card ----------------------------------------------------------
function fillList(id, items) {
  $(id).replaceChildren(...items.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
}

async function openRecipe(id) {
  clearError();
  let recipe;
  try {
    recipe = await getJson("/api/recipe/" + encodeURIComponent(id));
  } catch (e) {
    showError(e.message || String(e));
    return;
  }
  $("recipe").dataset.recipeId = recipe.recipe_id;
  $("recipe-title").textContent = recipe.title || "(no title)";
  const cls = recipe.class_name && recipe.class_name !== "background" ? recipe.class_name + " · " : "";
  $("recipe-meta").textContent = cls + recipe.partition + " · id " + recipe.recipe_id;
  const photo = $("recipe-photo");
  photo.hidden = !recipe.photos.length;
  if (recipe.photos.length) {
    photo.src = recipe.photos[0];
    photo.alt = recipe.title;
  } else {
    photo.removeAttribute("src");
  }
  fillList("recipe-ingredients", recipe.ingredients);
  fillList("recipe-instructions", recipe.instructions);
  const source = $("recipe-source");
  const safe = typeof recipe.url === "string" && /^https?:\/\//i.test(recipe.url);  // no javascript: links
  source.hidden = !safe;
  if (safe) {
    source.href = recipe.url;
    source.textContent = "Source recipe: " + recipe.url;
  } else {
    source.removeAttribute("href");
  }
  $("recipe").showModal();
}

$("recipe-close").addEventListener("click", () => $("recipe").close());
$("recipe").addEventListener("click", (event) => {  // a click on the backdrop closes it
  if (event.target === $("recipe")) $("recipe").close();
});

fetch("/api/classes")
  .then((r) => r.json())
  .then((data) => {
    if (data.error) throw new Error(data.error);
    for (const name of data.classes) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      $("class").appendChild(option);
    }
    for (const name of data.partitions || []) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name + " only";
      $("partition").appendChild(option);
    }
    hasGenerator = Boolean(data.generator);
    $("status").textContent = data.recipes + " recipes, " + data.images + " photos · " + data.run;
    document.body.dataset.ready = "1";
  })
  .catch((e) => showError("cannot read the index: " + (e.message || e)));
