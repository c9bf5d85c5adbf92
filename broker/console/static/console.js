// The console's only script: "select all" for the events table. Everything else is plain HTML.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll("input.select")) box.checked = all.checked;
  });
});
