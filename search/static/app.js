// recipekit serve: the page's only script (no dependencies, nothing fetched from outside).
"use strict";
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function card(hit) {
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.recipeId = hit.recipe_id;
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
  meta.textContent = "#" + hit.rank + " · score " + hit.score.toFixed(3) + cls;
  body.append(title, meta);
  el.appendChild(body);
  return el;
}

function showHits(heading, hits) {
  $("results").replaceChildren(...hits.map(card));
  $("results-title").textContent = hits.length ? heading : heading + ": nothing found";
  $("results-title").hidden = false;
}

async function call(url, options, heading, button) {
  clearError();
  button.disabled = true;
  try {
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
    showHits(heading, data.hits);
  } catch (e) {
    $("results").replaceChildren();
    $("results-title").hidden = true;
    showError(e.message || String(e));
  } finally {
    button.disabled = false;
  }
}

$("photo-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("photo").files[0];
  if (!file) {
    showError("choose a photo first");
    return;
  }
  const body = new FormData();
  body.append("image", file, file.name);
  call("/api/image?k=12", { method: "POST", body }, "Recipes for " + file.name, $("photo-submit"));
});

$("ingredients-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("q").value.trim();  // an empty one goes to the server too: one place says what is wrong
  const params = new URLSearchParams({ q, without: $("without").value.trim(), class: $("class").value, k: "12" });
  const without = $("without").value.trim() ? " without " + $("without").value.trim() : "";
  call("/api/ingredients?" + params, {}, "Dishes with " + q + without, $("ingredients-submit"));
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
    $("status").textContent = data.recipes + " recipes, " + data.images + " photos · " + data.run;
    document.body.dataset.ready = "1";
  })
  .catch((e) => showError("cannot read the index: " + (e.message || e)));
