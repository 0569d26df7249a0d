// quotad dashboard: confirmations, copy-to-clipboard, scrolling boxes. Every page works without it.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
  if (!button) {
    return;
  }
  const source = document.querySelector(button.dataset.copy);
  if (source && navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent.trim()).then(() => {
      button.textContent = "Copied";
    });
  }
});
// A box that scrolls sideways (a wide table or chart on a narrow screen) takes the
// keyboard's focus, so its hidden part can be scrolled to without a mouse.
function focusableScrollers() {
  for (const box of document.querySelectorAll("table, figure.chart")) {
    if (box.scrollWidth > box.clientWidth) {
      box.setAttribute("tabindex", "0");
      if (!box.hasAttribute("aria-label") && !box.hasAttribute("aria-labelledby")) {
        const heading = box.closest("section, .card, figure")?.querySelector("h2, h3, figcaption");
        box.setAttribute("aria-label", (heading ? heading.textContent.trim() + ": " : "") + "scrolls sideways");
      }
    } else if (box.getAttribute("tabindex") === "0") {
      box.removeAttribute("tabindex");
    }
  }
}
document.addEventListener("DOMContentLoaded", focusableScrollers);
window.addEventListener("resize", focusableScrollers);
// Every table can be downloaded as CSV or JSON: its header row names the fields, each
// other row is a record (the actions column, being buttons, is left out).
function tableRecords(table) {
  const head = table.tHead ? table.tHead.rows[0] : table.rows[0];
  if (!head) {
    return null;
  }
  // textContent, not innerText: a table in a closed "show as a table" is not rendered.
  const names = [...head.cells].map((cell) => cell.textContent.trim().replace(/\s+/g, " "));
  const kept = names.map((name, i) => (name && name.toLowerCase() !== "actions" ? i : -1)).filter((i) => i >= 0);
  const rows = [...table.rows].filter((row) => row !== head && row.parentElement.tagName !== "THEAD");
  return {
    names: kept.map((i) => names[i]),
    rows: rows.map((row) => kept.map((i) => (row.cells[i] ? row.cells[i].textContent.trim().replace(/\s+/g, " ") : ""))),
  };
}
function csvOf(records) {
  const quote = (value) => (/[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value);
  return [records.names, ...records.rows].map((row) => row.map(quote).join(",")).join("\r\n") + "\r\n";
}
function jsonOf(records) {
  const items = records.rows.map((row) => Object.fromEntries(records.names.map((name, i) => [name, row[i]])));
  return JSON.stringify(items, null, 2) + "\n";
}
function saveAs(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}
function tableDownloads() {
  const page = location.pathname.replace(/^\/+|\/+$/g, "").replace(/[^A-Za-z0-9._-]+/g, "-") || "page";
  document.querySelectorAll("main table").forEach((table, index) => {
    if (table.dataset.downloads === "off" || !table.rows.length) {
      return;
    }
    const label = table.id || (table.caption ? table.caption.textContent.trim() : `table-${index + 1}`);
    const base = `${page}-${label}`.replace(/[^A-Za-z0-9._-]+/g, "-");
    const bar = document.createElement("p");
    bar.className = "table-downloads";
    for (const [kind, type, make] of [["CSV", "text/csv", csvOf], ["JSON", "application/json", jsonOf]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link-button";
      button.textContent = kind;
      button.dataset.download = kind.toLowerCase();
      button.setAttribute("aria-label", `Download this table (${label}) as ${kind}`);
      button.addEventListener("click", () => {
        const records = tableRecords(table);
        if (records) {
          saveAs(`${base}.${kind.toLowerCase()}`, type, make(records));
        }
      });
      bar.appendChild(button);
    }
    // Below a closed "show as a table", not inside it: the data is there to take either way.
    (table.closest("details") || table).insertAdjacentElement("afterend", bar);
  });
}
document.addEventListener("DOMContentLoaded", tableDownloads);
