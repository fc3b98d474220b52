// Shows when this page was loaded, proving scripts are served with the right type.
document.addEventListener("DOMContentLoaded", () => {
  const p = document.createElement("p");
  p.textContent = "Loaded at " + new Date().toLocaleTimeString() + ".";
  document.querySelector("main").append(p);
});
