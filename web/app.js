// nanogptq demo page: loads the checkpoints from /api/variants, sends the
// prompt and settings to /api/generate and shows the continuations side by
// side. URL parameters preset the form (prompt, max_new_tokens, temperature,
// top_k, top_p, seed, variants = comma-separated names); autorun=1 submits it
// on load (used by scripts/demo_screenshot).
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = ["max_new_tokens", "temperature", "top_k", "top_p", "seed"];
let variants = [];
let selected = null; // names from ?variants=, or null for all

function formatBytes(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " MB";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " kB";
  return n + " B";
}

function chip(text, strong, cls) {
  const span = document.createElement("span");
  span.className = "chip" + (cls ? " " + cls : "");
  span.append(text + " ");
  const b = document.createElement("b");
  b.textContent = strong;
  span.append(b);
  return span;
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

function shownVariants() {
  return selected ? variants.filter((v) => selected.includes(v.name)) : variants;
}

function buildCards() {
  const grid = $("grid");
  grid.replaceChildren();
  shownVariants().forEach((v, i) => {
    const card = document.createElement("article");
    card.className = "card" + (i === 0 ? " baseline" : "");
    card.id = "card-" + v.name;
    const h = document.createElement("h2");
    const name = document.createElement("span");
    name.textContent = v.name;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = v.label;
    h.append(name, label);
    const stats = document.createElement("div");
    stats.className = "stats";
    stats.append(
      chip("ppl", v.perplexity == null ? "n/a" : v.perplexity.toFixed(3)),
      chip("size", formatBytes(v.file_bytes)),
      chip("bits/weight", v.bits_per_weight == null ? "n/a" : v.bits_per_weight.toFixed(2)),
    );
    const speed = chip("speed", "–", "speed");
    speed.dataset.role = "speed";
    stats.append(speed);
    const text = document.createElement("pre");
    text.className = "text pending";
    text.textContent = "press Generate";
    const agree = document.createElement("div");
    agree.className = "agree";
    card.append(h, stats, text, agree);
    grid.append(card);
  });
}

function commonPrefix(a, b) {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

function showResults(data) {
  const reference = data.results.length ? Array.from(data.results[0].text) : [];
  for (const [i, r] of data.results.entries()) {
    const card = $("card-" + r.name);
    if (!card) continue;
    card.querySelector('[data-role="speed"] b').textContent = Math.round(r.tokens_per_second) + " tok/s";
    const pre = card.querySelector(".text");
    pre.className = "text";
    pre.replaceChildren();
    const promptSpan = document.createElement("span");
    promptSpan.className = "prompt-text";
    promptSpan.textContent = data.prompt;
    pre.append(promptSpan);
    const chars = Array.from(r.text);
    const agree = card.querySelector(".agree");
    if (i === 0) {
      pre.append(chars.join(""));
      agree.textContent = r.prompt_truncated ? `the model saw the last ${r.prompt_tokens} prompt characters` : "";
    } else {
      const same = commonPrefix(chars, reference);
      pre.append(chars.slice(0, same).join(""));
      if (same < chars.length) {
        const d = document.createElement("span");
        d.className = "diverged";
        d.textContent = chars.slice(same).join("");
        pre.append(d);
      }
      agree.textContent = same === chars.length && chars.length === reference.length
        ? `identical to ${data.results[0].name}`
        : `same as ${data.results[0].name} for the first ${same} of ${chars.length} characters`;
    }
  }
}

function readForm() {
  const body = { prompt: $("prompt").value };
  for (const f of FIELDS) {
    const raw = $(f).value.trim();
    if (raw !== "") body[f] = Number(raw);
  }
  if (selected) body.variants = shownVariants().map((v) => v.name);
  return body;
}

async function generate(event) {
  if (event) event.preventDefault();
  const button = $("generate");
  button.disabled = true;
  setStatus("generating…");
  document.querySelectorAll(".text").forEach((t) => {
    t.className = "text pending";
    t.textContent = "generating…";
  });
  try {
    const resp = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(readForm()),
    });
    const data = await resp.json();
    if (!resp.ok) {
      setStatus(`error${data.field ? " in " + data.field : ""}: ${data.error}`, true);
      if (data.field && $(data.field)) $(data.field).focus();
      document.querySelectorAll(".text").forEach((t) => (t.textContent = ""));
      return;
    }
    showResults(data);
    const generating = data.results.reduce((sum, r) => sum + r.seconds, 0);
    setStatus(`${data.results.length} checkpoints · ${generating.toFixed(2)} s generating · seed ${data.settings.seed}`);
    document.body.dataset.done = "1";
  } catch (e) {
    setStatus("request failed: " + e.message, true);
  } finally {
    button.disabled = false;
  }
}

async function init() {
  const params = new URLSearchParams(location.search);
  let info;
  try {
    const resp = await fetch("/api/variants");
    info = await resp.json();
  } catch (e) {
    setStatus("cannot reach the demo server: " + e.message, true);
    return;
  }
  variants = info.variants;
  $("source").textContent = info.perplexity_source;
  $("prompt").maxLength = info.limits.max_prompt_chars;
  $("max_new_tokens").max = info.limits.max_new_tokens;
  $("prompt").value = params.has("prompt") ? params.get("prompt") : info.defaults.prompt;
  for (const f of FIELDS) $(f).value = params.has(f) ? params.get(f) : info.defaults[f];
  if (params.has("variants")) selected = params.get("variants").split(",").map((s) => s.trim()).filter(Boolean);
  buildCards();
  $("controls").addEventListener("submit", generate);
  $("reseed").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * 1e9);
  });
  if (params.get("autorun") === "1") generate();
}

init();
