// nubes dashboard: live parts of pages, and the image upload. No library.
"use strict";

(function () {
  const refresh = Number(document.body.dataset.refresh) || 2000;

  // A part the user is typing in (a disable reason) is left alone until sent.
  function busy(element) {
    const active = document.activeElement;
    if (active && element.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
      return true;
    }
    return Array.from(element.querySelectorAll("input, textarea")).some(function (field) {
      return field.type !== "hidden" && field.value !== field.defaultValue;
    });
  }

  // Parts with a request on its way: a slow cloud gets one at a time, not a pile.
  const waiting = new Set();

  async function update(element) {
    if (busy(element) || waiting.has(element)) return;
    let response;
    waiting.add(element);
    try {
      response = await fetch(element.dataset.live, {
        headers: { "X-Requested-With": "fetch" },
        credentials: "same-origin",
      });
    } catch (err) {
      return; // the API restarting: try again next time
    } finally {
      waiting.delete(element);
    }
    if (response.status === 401) {
      window.location = response.headers.get("X-Login") || "login";
      return;
    }
    if (response.ok) {
      const html = await response.text();
      // Typing may have begun while the fragment was on its way.
      if (busy(element)) return;
      // The server rendered and escaped this fragment with the page's own templates.
      element.innerHTML = html;
    }
  }

  function live() {
    const parts = document.querySelectorAll("[data-live]");
    if (parts.length === 0) return;
    setInterval(function () { parts.forEach(update); }, refresh);
  }

  function upload() {
    const form = document.getElementById("upload-image");
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const out = form.querySelector("output");
      const file = form.elements.file.files[0];
      const query = new URLSearchParams({
        name: form.elements.name.value,
        disk_format: form.elements.disk_format.value,
      });
      out.textContent = "Uploading…";
      const response = await fetch(form.dataset.action + "?" + query, {
        method: "POST",
        body: file,
        headers: { "X-CSRF-Token": form.dataset.csrf, "X-Requested-With": "fetch" },
        credentials: "same-origin",
      });
      if (response.ok) {
        window.location.reload();
      } else {
        out.textContent = "Upload failed (" + response.status + ")";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { live(); upload(); });
})();
