/* The service's own push page: a token from the URL fragment (#token=…), one button. */
(function () {
  "use strict";
  const root = document.getElementById("push");
  const status = document.getElementById("status");
  const result = document.getElementById("result");
  const params = new URLSearchParams(window.location.hash.slice(1));

  function show(state, text) {
    root.dataset.state = state;
    status.textContent = text;
  }

  document.getElementById("enable").addEventListener("click", async () => {
    const token = params.get("token") || document.getElementById("token").value;
    show("working", "Registering…");
    try {
      const device = await window.CommunicationPush.register({
        apiBase: root.dataset.apiBase,
        serviceWorker: root.dataset.serviceWorker,
        token: token,
      });
      result.textContent = JSON.stringify(device);
      show("registered", "This browser will receive notifications.");
    } catch (error) {
      show("error", String(error && error.message ? error.message : error));
    }
  });

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.addEventListener("message", (event) => {
      if (event.data && event.data.type === "pushsubscriptionchange") {
        document.getElementById("enable").click();
      }
    });
  }
})();
