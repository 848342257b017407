/* Communication Service: the Web Push service worker.
 *
 * Copy it onto your own origin (a service worker only serves pages of its origin) and register it
 * with push.js. It shows what the service sends: {title, body, image, url, tag, data}. */
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function safeUrl(value) {
  if (!value) return null;
  try {
    const url = new URL(value, self.location.origin);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch (e) {
    return null;
  }
}

self.addEventListener("push", (event) => {
  let payload = {};
  if (event.data) {
    try {
      payload = event.data.json();
    } catch (e) {
      payload = { body: event.data.text() };
    }
  }
  const options = {
    body: payload.body || "",
    tag: payload.tag || undefined,
    image: safeUrl(payload.image) || undefined,
    data: Object.assign({}, payload.data || {}, { url: safeUrl(payload.url) }),
  };
  event.waitUntil(self.registration.showNotification(payload.title || "Notification", options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  if (!url) return;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      for (const client of windows) {
        if (client.url === url && "focus" in client) return client.focus();
      }
      return self.clients.openWindow(url);
    })
  );
});

// The browser replaced the subscription: tell open pages, which hold the user's token and
// register the new one (push.js does, when the page calls CommunicationPush.register again).
self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      for (const client of windows) client.postMessage({ type: "pushsubscriptionchange" });
    })
  );
});
