/* Communication Service: Web Push registration.
 *
 *   await CommunicationPush.register({
 *     apiBase: "https://comms.example.com/api/v1",  // the service's API
 *     token: userJwt,                                // the user's bearer token
 *     serviceWorker: "/sw.js",                       // sw.js, copied onto your origin
 *   });                                              // → the device as the API returns it
 *
 * Registers the service worker, asks for permission, subscribes with the service's VAPID public
 * key (GET /push/vapid-public-key) and posts the subscription to POST /devices. A subscription made
 * with another key is replaced. CommunicationPush.unregister({apiBase, token, serviceWorker, deviceId})
 * undoes it. */
(function (global) {
  "use strict";

  function urlBase64ToUint8Array(value) {
    const padded = (value + "=".repeat((4 - (value.length % 4)) % 4))
      .replace(/-/g, "+")
      .replace(/_/g, "/");
    const raw = global.atob(padded);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  function sameKey(a, b) {
    if (!a || !b) return false;
    const x = new Uint8Array(a);
    if (x.length !== b.length) return false;
    for (let i = 0; i < x.length; i++) if (x[i] !== b[i]) return false;
    return true;
  }

  function browserName() {
    const ua = navigator.userAgent;
    if (/Edg\//.test(ua)) return "edge";
    if (/Firefox\//.test(ua)) return "firefox";
    if (/Chrom(e|ium)\//.test(ua)) return "chrome";
    if (/Safari\//.test(ua)) return "safari";
    return "other";
  }

  // navigator.serviceWorker.ready only resolves for a worker whose scope covers this page; wait
  // for this registration's worker instead, wherever its scope is.
  function activated(registration) {
    if (registration.active) return Promise.resolve(registration);
    const worker = registration.installing || registration.waiting;
    return new Promise((resolve, reject) => {
      worker.addEventListener("statechange", () => {
        if (worker.state === "activated") resolve(registration);
        if (worker.state === "redundant") reject(new Error("service worker failed to install"));
      });
    });
  }

  async function api(options, path, init) {
    const response = await fetch(options.apiBase.replace(/\/$/, "") + path, init);
    const body = response.status === 204 ? null : await response.json();
    if (!response.ok) {
      throw new Error((body && body.detail) || "HTTP " + response.status);
    }
    return body;
  }

  async function registration(options) {
    if (!("serviceWorker" in navigator) || !("PushManager" in global)) {
      throw new Error("This browser has no Web Push.");
    }
    const reg = await navigator.serviceWorker.register(options.serviceWorker);
    return activated(reg);
  }

  async function register(options) {
    const reg = await registration(options);
    const permission = await Notification.requestPermission();
    if (permission !== "granted") throw new Error("Notifications are not allowed.");
    const { public_key: publicKey } = await api(options, "/push/vapid-public-key", {});
    const key = urlBase64ToUint8Array(publicKey);
    let subscription = await reg.pushManager.getSubscription();
    if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await reg.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: key,
      });
    }
    return api(options, "/devices", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Authorization: "Bearer " + options.token,
      },
      body: JSON.stringify({
        platform: "web",
        subscription: subscription.toJSON(),
        browser: browserName(),
        locale: navigator.language || "",
      }),
    });
  }

  async function unregister(options) {
    const reg = await registration(options);
    const subscription = await reg.pushManager.getSubscription();
    if (options.deviceId) {
      await api(options, "/devices/" + options.deviceId, {
        method: "DELETE",
        headers: { Authorization: "Bearer " + options.token },
      });
    }
    if (subscription) await subscription.unsubscribe();
  }

  global.CommunicationPush = { register, unregister, urlBase64ToUint8Array };
})(self);
