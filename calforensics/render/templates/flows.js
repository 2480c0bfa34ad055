// The flow table of report.html: filter, sort and page through every flow the page carries (a JSON
// block, read as data), with no network access. Text from the bundle is put into cells as text
// (textContent), never as markup. The view lives in the address's fragment
// (#flows?q=…&v=…&sort=…&desc=1&page=…&size=…), so a filtered view can be linked to.
(function () {
  "use strict";
  var data = document.getElementById("flow-data");
  var table = document.getElementById("flow-table");
  if (!data || !table) { return; }
  var cols = JSON.parse(data.textContent);
  var rows = cols.rows;
  var keys = cols.keys;
  var tbody = table.tBodies[0];
  var q = document.getElementById("flow-q");
  var v = document.getElementById("flow-v");
  var status = document.getElementById("flow-status");
  var state = { q: "", v: "", sort: "", desc: false, page: 1, size: 100 };

  function readHash() {
    state = { q: "", v: "", sort: "", desc: false, page: 1, size: 100 };
    var h = window.location.hash;
    if (h.indexOf("#flows?") !== 0) { return; }
    h.slice(7).split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      var k = i < 0 ? kv : kv.slice(0, i);
      var val = i < 0 ? "" : decodeURIComponent(kv.slice(i + 1).replace(/\+/g, " "));
      if (k === "q" || k === "v" || k === "sort") { state[k] = val; }
      if (k === "desc") { state.desc = val === "1"; }
      if (k === "page") { state.page = Math.max(1, parseInt(val, 10) || 1); }
      if (k === "size") { state.size = Math.min(1000, Math.max(1, parseInt(val, 10) || 100)); }
    });
  }

  function writeHash() {
    var parts = [];
    if (state.q) { parts.push("q=" + encodeURIComponent(state.q)); }
    if (state.v) { parts.push("v=" + encodeURIComponent(state.v)); }
    if (state.sort) { parts.push("sort=" + encodeURIComponent(state.sort) + (state.desc ? "&desc=1" : "")); }
    if (state.page > 1) { parts.push("page=" + state.page); }
    if (state.size !== 100) { parts.push("size=" + state.size); }
    window.history.replaceState(null, "", parts.length ? "#flows?" + parts.join("&") : "#flows");
  }

  function matches(row) {
    if (state.v && row[keys.indexOf("verdict")] !== state.v) { return false; }
    if (!state.q) { return true; }
    var words = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    var text = row.join(" ").toLowerCase();
    return words.every(function (w) { return text.indexOf(w) >= 0; });
  }

  function sorted(list) {
    var k = keys.indexOf(state.sort);
    if (k < 0) { return list; }
    var sign = state.desc ? -1 : 1;
    return list.slice().sort(function (a, b) {
      var x = a[k], y = b[k];
      if (typeof x === "number" && typeof y === "number") { return sign * (x - y) || a[0] - b[0]; }
      return sign * String(x).localeCompare(String(y)) || a[0] - b[0];
    });
  }

  function render() {
    var found = sorted(rows.filter(matches));
    var pages = Math.max(1, Math.ceil(found.length / state.size));
    state.page = Math.min(state.page, pages);
    var start = (state.page - 1) * state.size;
    var page = found.slice(start, start + state.size);
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    page.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.id = "row-" + row[0];
      row.forEach(function (cell, i) {
        if (keys[i] === "tags") { return; }  // what the filter finds a service's or a pod's flows by
        var td = document.createElement("td");
        td.textContent = cell === null ? "" : String(cell);
        if (typeof cell === "number") { td.className = "num"; }
        if (keys[i] === "verdict") { td.className = "verdict-" + cell; }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    status.textContent = found.length + " of " + rows.length + " flows match; page " + state.page + " of " +
      pages + " (" + state.size + " a page)";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var on = th.getAttribute("data-key") === state.sort;
      th.setAttribute("aria-sort", on ? (state.desc ? "descending" : "ascending") : "none");
    });
    writeHash();
  }

  readHash();
  q.value = state.q;
  v.value = state.v;
  q.addEventListener("input", function () { state.q = q.value; state.page = 1; render(); });
  v.addEventListener("change", function () { state.v = v.value; state.page = 1; render(); });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      state.desc = state.sort === key ? !state.desc : false;
      state.sort = key;
      render();
    });
  });
  document.getElementById("flow-prev").addEventListener("click", function () {
    state.page = Math.max(1, state.page - 1); render();
  });
  document.getElementById("flow-next").addEventListener("click", function () { state.page += 1; render(); });
  // a link elsewhere on the page (a service, a pod) sets a view: show it, and go to the table
  window.addEventListener("hashchange", function () {
    if (window.location.hash.indexOf("#flows?") !== 0) { return; }
    readHash();
    q.value = state.q;
    v.value = state.v;
    render();
    document.getElementById("flows").scrollIntoView();
  });
  document.getElementById("flow-controls").hidden = false;
  document.getElementById("flow-static-note").hidden = true;
  render();
}());
