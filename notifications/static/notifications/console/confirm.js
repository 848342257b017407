// Asks before a console form that changes something is sent: <form data-confirm="question">.
// A static file because the admin's Content-Security-Policy allows no inline script.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
