// The microscope's only script. On a static export's search page it searches the
// units' words and labels in the browser (search-index.js sets NEURONSCOPE_INDEX),
// ranking as the server does (atlas/browse.py search_units): each unit once, by its
// match: exact matches first, then label matches before word matches, then by the
// word's score (its rank among the atlas's word scores), then index order (model,
// layer, unit). A unit's number ("473", "#473") goes to that unit, or lists it first where several layers
// have it, as the server's search does.
(function () {
  "use strict";
  // Units listed: a one-letter query can match most of an atlas, and the page says when it cuts.
  var SHOWN = 500;
  var index = window.NEURONSCOPE_INDEX;
  var list = document.getElementById("hits");
  if (!index || !list) { return; }

  // The query from "?q=" (the search box) or "#query" (links.search): a hash with a bare "%" is
  // not percent-encoding, and decodeURIComponent throws on it, so it is taken as typed.
  function hashQuery() {
    var raw = window.location.hash.slice(1);
    try { return decodeURIComponent(raw); } catch (err) { return raw; }
  }

  // A unit's match: its label, else its best (first) matching word, an exact one preferred. A label has
  // no score (rank 0: labels tie, and fall to index order).
  function unitMatch(unit, needle) {
    var label = unit.label && unit.label.toLowerCase();
    if (label === needle) { return {text: "label: " + unit.label, exact: true, label: true, rank: 0}; }
    var found = label && label.indexOf(needle) >= 0 ?
      {text: "label: " + unit.label, exact: false, label: true, rank: 0} : null;
    for (var i = 0; i < unit.words.length; i++) {
      var word = unit.words[i].toLowerCase();
      var match = {text: "word: " + unit.words[i], exact: word === needle, label: false, rank: unit.ranks[i]};
      if (match.exact) { return match; }
      if (!found && word.indexOf(needle) >= 0) { found = match; }
    }
    return found;
  }

  // The unit a number names in each layer that has it (index.layers: {model, layer, units, href}).
  function numberedHits(query) {
    var text = query.replace(/^#/, "");
    if (!/^[0-9]{1,9}$/.test(text)) { return []; }
    var number = parseInt(text, 10);
    return (index.layers || []).filter(function (layer) { return number < layer.units; }).map(function (layer) {
      return {unit: {model: layer.model, layer: layer.layer, unit: number, href: layer.href + number + "/index.html"},
              match: {text: "unit: " + number}};
    });
  }

  var params = new URLSearchParams(window.location.search);
  var query = (params.get("q") || hashQuery() || "").trim();
  var box = document.querySelector("form.search input[name=q]");
  if (box) { box.value = query; }
  if (!query) { return; }
  var needle = query.toLowerCase();
  var hits = [];
  index.units.forEach(function (unit) {
    var match = unitMatch(unit, needle);
    if (match) { hits.push({unit: unit, match: match, order: hits.length}); }
  });
  hits.sort(function (a, b) {
    return (b.match.exact - a.match.exact) || (b.match.label - a.match.label) ||
      (a.match.rank - b.match.rank) || (a.order - b.order);
  });
  var numbered = numberedHits(query);
  if (numbered.length === 1) { window.location.replace(numbered[0].unit.href); return; }
  hits = numbered.concat(hits.filter(function (hit) {
    return !numbered.some(function (first) {  // listed once, first
      return first.unit.model === hit.unit.model && first.unit.layer === hit.unit.layer &&
        first.unit.unit === hit.unit.unit;
    });
  }));
  hits.slice(0, SHOWN).forEach(function (hit) {
    var item = document.createElement("li");
    var link = document.createElement("a");
    link.href = hit.unit.href;
    link.textContent = hit.unit.model + " · " + hit.unit.layer + " · unit " + hit.unit.unit;
    var match = document.createElement("span");
    match.className = "match";
    match.textContent = hit.match.text;
    item.appendChild(link); item.appendChild(match); list.appendChild(item);
  });
  var count = document.getElementById("count");
  count.textContent = hits.length + (hits.length === 1 ? " unit matches “" : " units match “") + query + "”" +
    (hits.length > SHOWN ? " (the first " + SHOWN + " shown)" : "");
  count.hidden = hits.length === 0;
  document.getElementById("nohits").hidden = hits.length > 0;
})();

// Keyboard, on a unit page: ← / → (and k / j) open the previous / next unit, the <link rel="prev|next"> of
// its head (the list the visitor came from). Keys typed into a field, or with a modifier, are left alone.
(function () {
  "use strict";
  var KEYS = {ArrowLeft: "prev", k: "prev", ArrowRight: "next", j: "next"};
  document.addEventListener("keydown", function (event) {
    var rel = KEYS[event.key];
    var target = event.target;
    if (!rel || event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) { return; }
    var link = document.querySelector('head link[rel="' + rel + '"]');
    if (link) { window.location.href = link.href; }
  });
})();
