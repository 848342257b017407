// A template's variables are edited as rows (templates_app.forms.VariablesWidget): "Add a variable"
// appends a copy of the empty row with the next index and counts it in TOTAL_FORMS.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-variables-add]");
  if (!button) return;
  const widget = button.closest("[data-variables]");
  const total = widget.querySelector("[data-variables-total]");
  const index = Number(total.value);
  const html = widget.querySelector("template[data-variables-empty]").innerHTML;
  const body = widget.querySelector("[data-variables-rows]");
  body.insertAdjacentHTML("beforeend", html.replaceAll("__prefix__", String(index)));
  total.value = String(index + 1);
  body.lastElementChild.querySelector("input")?.focus();
});
