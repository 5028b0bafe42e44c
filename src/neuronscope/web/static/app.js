// The microscope's only script. On a static export's search page it searches the
// units' words and labels in the browser (search-index.js sets NEURONSCOPE_INDEX);
// the server's pages need no script.
(function () {
  "use strict";
  var index = window.NEURONSCOPE_INDEX;
  var list = document.getElementById("hits");
  if (!index || !list) { return; }
  var params = new URLSearchParams(window.location.search);
  var query = (params.get("q") || decodeURIComponent(window.location.hash.slice(1)) || "").trim();
  var box = document.querySelector("form.search input[name=q]");
  if (box) { box.value = query; }
  if (!query) { return; }
  var needle = query.toLowerCase();
  var hits = [];
  index.units.forEach(function (unit) {
    var exact = false, found = null;
    if (unit.label && unit.label.toLowerCase().indexOf(needle) >= 0) {
      found = "label: " + unit.label; exact = unit.label.toLowerCase() === needle;
    }
    for (var i = 0; i < unit.words.length; i++) {
      var word = unit.words[i].toLowerCase();
      if (word.indexOf(needle) >= 0) {
        if (!found || word === needle) { found = "word: " + unit.words[i]; exact = exact || word === needle; }
        if (word === needle) { break; }
      }
    }
    if (found) { hits.push({unit: unit, text: found, exact: exact}); }
  });
  hits.sort(function (a, b) { return (b.exact - a.exact); });
  hits.slice(0, 500).forEach(function (hit) {
    var item = document.createElement("li");
    var link = document.createElement("a");
    link.href = hit.unit.href;
    link.textContent = hit.unit.model + " · " + hit.unit.layer + " · unit " + hit.unit.unit;
    var match = document.createElement("span");
    match.className = "match";
    match.textContent = hit.text;
    item.appendChild(link); item.appendChild(match); list.appendChild(item);
  });
  document.getElementById("nohits").hidden = hits.length > 0;
})();
