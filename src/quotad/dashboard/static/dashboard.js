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
