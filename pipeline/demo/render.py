"""Synthetic food photos for the demo corpus (PIL only).

A picture follows from its recipe, so that image -> recipe retrieval is
learnable: the dish type picks the vessel (bowl, plate, pizza base, glass,
cake stand, tortillas ...) and its base colour, tinted by the main ingredient;
every visible ingredient is then scattered as small shapes in its own colour
(many more pieces for the main ingredient). Each photo gets its own viewpoint
offset, scale, squash, table colour, brightness, colour cast, blur and flip,
drawn from an RNG seeded by ``(seed, image id)`` only, so any process renders
the same bytes for the same image.

Simple vessels are data (``vessels`` in ``vocabulary.json``: ellipses, rects,
lines ... in units of the vessel radius, y squashed by the viewpoint; ``maybe``
and ``choice`` ops vary them); tacos, muffins and cookies are code below.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import multiprocessing
import os
import random
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from functools import cache, lru_cache
from importlib import resources

from PIL import Image, ImageChops, ImageDraw, ImageFilter

__all__ = ["ImageWriter", "image_rel_path", "load_vocabulary", "render_chunk", "render_image"]

TAU = 2 * math.pi
CERAMIC = [(245, 245, 240), (236, 228, 210), (62, 92, 140), (42, 42, 46), (190, 110, 80), (150, 172, 160),
           (230, 224, 236)]
PLATES = [(246, 246, 242), (240, 236, 226), (232, 236, 240), (60, 62, 66), (200, 215, 225)]
POLYGONS = {  # unit shapes, scaled and rotated per piece
    "leaf": [(-1, 0), (-0.5, 0.38), (0.5, 0.38), (1, 0), (0.5, -0.38), (-0.5, -0.38)],
    "strip": [(-0.8, -0.18), (0.8, -0.18), (0.8, 0.18), (-0.8, 0.18)],
    "cube": [(-0.4, -0.4), (0.4, -0.4), (0.4, 0.4), (-0.4, 0.4)],
    "wedge": [(-0.42, -0.35), (0.49, 0), (-0.42, 0.35)],
}


@lru_cache(maxsize=1)
def load_vocabulary() -> dict:
    """The demo vocabulary (ingredients, dishes, vessels ...); treat it as read-only."""
    text = resources.files(__package__).joinpath("vocabulary.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _tables():
    v = load_vocabulary()
    ingr = [(tuple(i["rgb"]), i["shape"], i["cat"]) for i in v["ingredients"]]
    dishes = [(d["vessel"], tuple(d["rgb"]), d["tint"], frozenset(d.get("hide", ()))) for d in v["dishes"]]
    return ingr, dishes, v["vessels"], {k: tuple(c) for k, c in v["colours"].items()}


@lru_cache(maxsize=1)
def _noise_tile() -> Image.Image:
    """A fixed 512x512 RGB noise tile with values 0..32 (crops of it texture the table)."""
    raw = random.Random(20240601).randbytes(512 * 512 * 3)
    return Image.frombytes("RGB", (512, 512), raw).point([v * 33 // 256 for v in range(256)] * 3)


def image_rel_path(partition: str, image_id: str) -> str:
    """``images/{partition}/{a}/{b}/{c}/{d}/{image_id}``, Recipe1M's layout."""
    return f"images/{partition}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id[3]}/{image_id}"


def _mix(a, b, t):
    return (int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t), int(a[2] + (b[2] - a[2]) * t))


def _dark(c, t=0.25):
    return _mix(c, (0, 0, 0), t)


def _light(c, t=0.35):
    return _mix(c, (255, 255, 255), t)


@cache
def _colour_spec(spec: str):
    """``"col"`` -> ("col", 0); ``"col-0.2"`` -> 20% darker; ``"col+0.3"`` -> 30% lighter."""
    for sign in "+-":
        if sign in spec:
            name, t = spec.split(sign)
            return name, float(t) if sign == "+" else -float(t)
    return spec, 0.0


class _Canvas:
    """One picture being drawn: the draw handle, its RNG, the vessel frame, palette and regions."""
    __slots__ = ("R", "d", "pal", "regions", "rng", "sq", "x", "y")

    def __init__(self, d, rng, x, y, R, sq, pal):
        self.d, self.rng, self.x, self.y, self.R, self.sq, self.pal = d, rng, x, y, R, sq, pal
        self.regions = []

    def colour(self, spec):
        name, t = _colour_spec(spec)
        c = self.pal[name]
        return c if not t else _light(c, t) if t > 0 else _dark(c, -t)

    def ell(self, x, y, rx, ry, fill=None, outline=None, width=1):
        self.d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=fill, outline=outline, width=width)

    def poly(self, pts, x, y, s, a, fill, sy=1.0):
        c, n = math.cos(a) * s, math.sin(a) * s
        self.d.polygon([(x + px * c - py * n, y + (px * n + py * c) * sy) for px, py in pts], fill=fill)

    def blob(self, x, y, rx, ry, fill, k=10):
        rnd = self.rng.random
        self.d.polygon([(x + rx * (0.86 + 0.22 * rnd()) * math.cos(TAU * i / k),
                         y + ry * (0.86 + 0.22 * rnd()) * math.sin(TAU * i / k)) for i in range(k)], fill=fill)

    def draw(self, ops):
        """Interpret vessel ops (coordinates in units of R around the centre, y squashed by sq)."""
        x, y, R, Ry, d = self.x, self.y, self.R, self.R * self.sq, self.d
        vessels = _tables()[2]
        for op in ops:
            kind = op[0]
            if kind == "use":
                self.draw(vessels[op[1]]["draw"])
            elif kind == "maybe":
                if self.rng.random() < op[1]:
                    self.draw(op[2:])
            elif kind == "choice":
                self.draw(op[1 + int(self.rng.random() * (len(op) - 1))])
            elif kind == "regions":
                self.set_regions(op[1])
            elif kind in ("ell", "shadow", "blob", "ring"):
                cx, cy, rx, ry = x + op[1] * R, y + op[2] * Ry, op[3] * R, op[4] * Ry
                if kind == "shadow":
                    self.ell(cx + rx * 0.05, cy + ry * 0.09, rx, ry, self.pal["shadow"])
                elif kind == "ell" and len(op) > 6:  # with an outline
                    self.ell(cx, cy, rx, ry, self.colour(op[5]), self.colour(op[6]), max(1, int(op[7] * R)))
                elif kind == "ell":
                    self.ell(cx, cy, rx, ry, self.colour(op[5]))
                elif kind == "blob":
                    self.blob(cx, cy, rx, ry, self.colour(op[5]))
                else:
                    self.ell(cx, cy, rx, ry, None, self.colour(op[5]), max(1, int(op[6] * R)))
            elif kind in ("rect", "rrect"):
                box = (x + op[1] * R, y + op[2] * Ry, x + op[3] * R, y + op[4] * Ry)
                if kind == "rect":
                    d.rectangle(box, fill=self.colour(op[5]))
                else:
                    d.rounded_rectangle(box, radius=op[5] * R, fill=self.colour(op[6]))
            elif kind == "line":
                d.line((x + op[1] * R, y + op[2] * Ry, x + op[3] * R, y + op[4] * Ry), fill=self.colour(op[5]),
                       width=max(1, int(op[6] * R)))
            elif kind == "path":
                pts = [(x + op[i] * R, y + op[i + 1] * Ry) for i in range(3, len(op), 2)]
                d.line(pts, fill=self.colour(op[1]), width=max(1, int(op[2] * R)))
            elif kind == "poly":
                d.polygon([(x + op[i] * R, y + op[i + 1] * Ry) for i in range(2, len(op), 2)], fill=self.colour(op[1]))
            elif kind == "pie":
                cx, cy, rx, ry = x + op[1] * R, y + op[2] * Ry, op[3] * R, op[4] * Ry
                d.pieslice((cx - rx, cy - ry, cx + rx, cy + ry), op[5], op[6], fill=self.colour(op[7]))
            else:
                raise ValueError(f"unknown vessel op {kind!r}")

    def set_regions(self, specs):
        """Where ingredients go, from specs in units of R; see :func:`_spot`."""
        x, y, R, Ry = self.x, self.y, self.R, self.R * self.sq
        self.regions = [(k, x + a * R, y + b * Ry, (c * R if k == "e" else x + c * R),
                         (e * Ry if k == "e" else y + e * Ry)) for k, a, b, c, e in specs]


# --- vessels made of a random number of items; each returns its regions. ------------------

def _tortilla(c):
    c.draw([["use", "plate_base"]])
    n, R, col = c.rng.choice((2, 3)), c.R, c.pal["col"]
    w, regs = R * 1.6 / n, []
    shell = _mix((236, 200, 120), (250, 225, 160), c.rng.random())
    for k in range(n):
        x, y = c.x + (k - (n - 1) / 2) * w, c.y + c.rng.uniform(-0.1, 0.1) * R
        rx, ry = w * 0.48, R * 0.5 * c.sq
        c.d.pieslice((x - rx, y - ry, x + rx, y + ry), 0, 180, fill=shell)
        c.ell(x, y, rx * 0.92, ry * 0.22, col)
        regs.append(("e", x, y - ry * 0.04, rx * 0.8, ry * 0.2))
    return regs


def _grid(c):
    """Muffins in a tin or cookies on a tray."""
    rows, cols = c.rng.choice(((2, 3), (3, 3), (2, 2)))
    R, sq, col, paper = c.R, c.sq, c.pal["col"], c.pal["rim"] if c.pal["muffin"] else None
    cw, ch = 2 * R / cols, 2 * R * sq / rows
    r, regs = min(cw, ch) * 0.42, []
    for i in range(rows):
        for j in range(cols):
            x = c.x - R + cw * (j + 0.5) + c.rng.uniform(-0.06, 0.06) * cw
            y = c.y - R * sq + ch * (i + 0.5) + c.rng.uniform(-0.06, 0.06) * ch
            if paper:
                c.ell(x, y + r * 0.1, r * 1.05, r * 1.05 * sq, paper)
            c.ell(x, y, r * 0.9, r * 0.9 * sq, col, _dark(col, 0.2), 2)
            regs.append(("e", x, y, r * 0.6, r * 0.6 * sq))
    return regs


CODE_VESSELS = {"tortilla": _tortilla, "muffin_tin": _grid, "sheet": _grid}


def _spot(rng, reg):
    """A random point of a region: ("e", cx, cy, rx, ry), ("r", x0, y0, x1, y1) or ("l", x0, y0, x1, y1)."""
    if reg[0] == "e":
        a, r = rng.random() * TAU, math.sqrt(rng.random())
        return reg[1] + reg[3] * r * math.cos(a), reg[2] + reg[4] * r * math.sin(a)
    t = rng.random()
    if reg[0] == "r":
        return reg[1] + (reg[3] - reg[1]) * t, reg[2] + (reg[4] - reg[2]) * rng.random()
    return reg[1] + (reg[3] - reg[1]) * t, reg[2] + (reg[4] - reg[2]) * t + rng.uniform(-2, 2)


def _pieces(c, regions, shape, col, n, s):
    """Scatter ``n`` pieces of one ingredient, each a shape of about ``s`` pixels."""
    d, rng, lo, hi = c.d, c.rng, _light(col), _dark(col)
    rnd = rng.random
    for _ in range(n):
        x, y = _spot(rng, regions[int(rnd() * len(regions))])
        z = s * (0.7 + 0.6 * rnd())
        if shape in POLYGONS:
            c.poly(POLYGONS[shape], x, y, z * (0.9 if shape == "leaf" else 1.0), rnd() * TAU, col)
        elif shape == "round" or shape == "dollop":
            r = z * (0.42 if shape == "round" else 0.75)
            c.ell(x, y, r, r, col)
            if r > 3:
                c.ell(x - r * 0.3, y - r * 0.3, r * 0.3, r * 0.3, lo)
        elif shape == "slice":
            r = z * 0.6
            c.ell(x, y, r, r, hi)
            c.ell(x, y, r * 0.74, r * 0.74, lo if col[0] + col[1] + col[2] < 600 else col)
        elif shape == "ring":
            c.ell(x, y, z * 0.55, z * 0.44, None, col, max(1, int(z * 0.2)))
        elif shape == "chunk":
            d.polygon([(x + z * (0.35 + 0.25 * rnd()) * math.cos(TAU * i / 6),
                        y + z * (0.35 + 0.25 * rnd()) * math.sin(TAU * i / 6)) for i in range(6)], fill=col)
        elif shape == "grain":
            for _ in range(4):
                gx, gy = x + (rnd() - 0.5) * z, y + (rnd() - 0.5) * z
                d.ellipse((gx - 1.6, gy - 1, gx + 1.6, gy + 1), fill=col)
        elif shape == "sprinkle":
            for _ in range(5):
                gx, gy = x + (rnd() - 0.5) * z * 1.4, y + (rnd() - 0.5) * z * 1.4
                d.rectangle((gx, gy, gx + 1, gy + 1), fill=col)
        elif shape == "drizzle":
            pts = [(x, y)]
            for _ in range(4):
                pts.append((pts[-1][0] + (rnd() - 0.5) * z * 2, pts[-1][1] + (rnd() - 0.5) * z * 2))
            d.line(pts, fill=col, width=max(1, int(z * 0.2)))
        elif shape == "noodle":
            a = rnd() * TAU
            co, si = math.cos(a) * z, math.sin(a) * z
            d.line([(x + (i - 3) * 0.4 * co + (i % 2) * 0.15 * si, y + (i - 3) * 0.4 * si - (i % 2) * 0.15 * co)
                    for i in range(7)], fill=col, width=max(1, int(z * 0.12)))


def _background(rng, size):
    h, s, v = rng.random(), rng.uniform(0.08, 0.35), rng.uniform(0.35, 0.85)
    table = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(h, s, v))
    img = Image.new("RGB", (size, size), table)
    tile, m = _noise_tile(), 512 - min(size, 512)
    ox, oy = int(rng.random() * m), int(rng.random() * m)
    noise = tile.crop((ox, oy, ox + size, oy + size)) if size <= 512 else tile.resize((size, size))
    img = ImageChops.add(img, noise, 1.0, -16)
    if rng.random() < 0.4:  # wood grain / tablecloth stripes
        d, step = ImageDraw.Draw(img), max(4, int(size * rng.uniform(0.05, 0.2)))
        for yy in range(int(rng.random() * step), size, step):
            d.line((0, yy, size, yy + rng.uniform(-3, 3)), fill=_dark(table, 0.12), width=max(1, step // 6))
    return img, table


def render_image(seed: int, image_id: str, dish: int, main: int, ingredients, size: int = 256) -> Image.Image:
    """Render one RGB photo of a recipe (dish index, main ingredient index, ingredient indices)."""
    ingr_t, dish_t, vessels, colours = _tables()
    digest = hashlib.sha1(f"recipekit-demo-image:{seed}:{image_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    vessel, base, tint, hide = dish_t[dish]
    mcol, mshape, _ = ingr_t[main]
    col = _mix(base, mcol, tint)
    for i in ingredients:
        if i != main and ingr_t[i][1] == "liquid":
            col = _mix(col, ingr_t[i][0], 0.12)
    col = tuple(max(0, min(255, v + int(rng.uniform(-8, 8)))) for v in col)
    img, table = _background(rng, size)
    pal = dict(colours, col=col, main=mcol, shadow=_dark(table, 0.3), rim=rng.choice(CERAMIC),
               plate=rng.choice(PLATES), crust=_mix((214, 160, 90), (240, 200, 130), rng.random()),
               bun=_mix((200, 130, 60), (230, 170, 90), rng.random()), roast=_mix(mcol, (150, 80, 30), 0.3),
               loaf=_mix(col, (90, 50, 20), 0.35), tray=rng.choice(((236, 226, 200), (170, 170, 176))),
               muffin=vessel == "muffin_tin")
    x, y = size * (0.5 + rng.uniform(-0.07, 0.07)), size * (0.5 + rng.uniform(-0.07, 0.07))
    R, sq = size * 0.36 * rng.uniform(0.86, 1.1), rng.uniform(0.76, 1.0)
    c = _Canvas(ImageDraw.Draw(img), rng, x, y, R, sq, pal)
    spec = vessels.get(vessel, {})
    c.set_regions(spec.get("regions", ()))
    c.draw(spec.get("draw", ()))
    regions = CODE_VESSELS[vessel](c) if vessel in CODE_VESSELS else c.regions
    s = R * 0.13
    for i in ingredients:
        icol, shape, cat = ingr_t[i]
        if i != main and shape not in ("none", "liquid") and cat not in hide:
            _pieces(c, regions, shape, icol, rng.randint(2, 5), s)
    if mshape not in ("none", "liquid"):
        _pieces(c, regions, mshape, mcol, rng.randint(9, 14), s * 1.15)
    # Photo jitter: brightness, contrast, colour cast, blur, mirror.
    b, k = rng.uniform(0.82, 1.15), rng.uniform(0.85, 1.1)
    fr, fg, fb = (b * rng.uniform(0.94, 1.06) for _ in range(3))  # out = ((v - 128) * k + 128) * f
    img = img.convert("RGB", (k * fr, 0, 0, 128 * (1 - k) * fr, 0, k * fg, 0, 128 * (1 - k) * fg,
                              0, 0, k * fb, 128 * (1 - k) * fb))
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.BoxBlur(rng.choice((0.5, 1.0))))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def render_chunk(out_dir: str, seed: int, size: int, tasks) -> int:
    """Render and atomically write ``tasks``: ``(rel_path, image_id, dish, main, ingredients)``."""
    made, pid = set(), os.getpid()
    for rel, image_id, dish, main, ingredients in tasks:
        path = os.path.join(out_dir, rel)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        img = render_image(seed, image_id, dish, main, ingredients, size)
        tmp = f"{path}.tmp-{pid}"
        try:
            img.save(tmp, format="JPEG", quality=90)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return len(tasks)


class ImageWriter:
    """Render images in chunks of tasks, in-process (workers=1) or over a process pool.

    At most ``4 * workers`` chunks are in flight, so memory stays bounded; every image
    is a function of its task alone, so the files do not depend on ``workers``. A worker
    that dies raises BrokenProcessPool here rather than hanging.
    """

    def __init__(self, out_dir: str, seed: int, size: int, workers: int = 1, chunk: int = 32):
        self.args = (out_dir, seed, size)
        self.chunk, self.workers, self.buf = chunk, workers, []
        self.pending: deque = deque()
        ctx = multiprocessing.get_context()
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx) if workers > 1 else None

    def add(self, task) -> None:
        self.buf.append(task)
        if len(self.buf) >= self.chunk:
            self._submit()

    def _submit(self) -> None:
        buf, self.buf = self.buf, []
        if not buf:
            return
        if self.pool is None:
            render_chunk(*self.args, buf)
            return
        self.pending.append(self.pool.submit(render_chunk, *self.args, buf))
        while len(self.pending) > 4 * self.workers:
            self.pending.popleft().result()

    def finish(self) -> None:
        """Render what is buffered and wait for every image to be on disk."""
        self._submit()
        while self.pending:
            self.pending.popleft().result()
        if self.pool is not None:
            self.pool.shutdown()

    def abort(self) -> None:
        """Drop what is queued; chunks already rendering finish (each image is still atomic)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
