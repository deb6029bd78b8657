// Aerie web UI: progressive enhancement only; every page works without this file.
"use strict";
(function () {
  // Live grapheme counter for the compose box: Intl.Segmenter counts what a person sees
  // as one character, as the 300 limit does.
  var seg = typeof Intl !== "undefined" && Intl.Segmenter ? new Intl.Segmenter() : null;
  function graphemes(s) {
    if (!seg) return Array.from(s).length;
    var n = 0;
    for (var _ of seg.segment(s)) n++;
    return n;
  }
  document.querySelectorAll("textarea[data-graphemes]").forEach(function (ta) {
    var max = parseInt(ta.dataset.graphemes, 10);
    var out = document.getElementById(ta.getAttribute("aria-describedby"));
    var button = ta.form.querySelector("button[type=submit]");
    function update() {
      var left = max - graphemes(ta.value.trim());
      out.textContent = left + " characters left";
      out.classList.toggle("over", left < 0);
      button.disabled = left < 0;
    }
    ta.addEventListener("input", update);
    update();
  });

  // Image picker: show a preview and a description field per chosen image, and only as
  // many fields as images.
  document.querySelectorAll("input[type=file][data-max]").forEach(function (input) {
    var max = parseInt(input.dataset.max, 10);
    var slots = input.form.querySelectorAll(".alt");
    var urls = [];
    function update() {
      urls.forEach(URL.revokeObjectURL);
      urls = [];
      var files = Array.prototype.slice.call(input.files || []);
      input.setCustomValidity(files.length > max ? "Choose at most " + max + " images." : "");
      slots.forEach(function (slot, i) {
        var img = slot.querySelector("img");
        slot.hidden = i >= files.length;
        if (i < files.length) {
          var u = URL.createObjectURL(files[i]);
          urls.push(u);
          img.src = u;
          img.hidden = false;
        } else {
          img.removeAttribute("src");
          slot.querySelector("input").value = "";
        }
      });
    }
    input.addEventListener("change", update);
    update();
  });

  // Images over the server's limit (data-max-bytes) are shrunk here, as a phone's photo
  // usually is: scaled to at most 2000 px and re-encoded as JPEG at falling quality until
  // it fits. The form cannot be sent meanwhile; a browser that cannot do it sends the
  // original, which the server refuses with a clear message.
  function shrink(file, maxBytes) {
    if (file.size <= maxBytes || !window.createImageBitmap || !HTMLCanvasElement.prototype.toBlob) {
      return Promise.resolve(file);
    }
    return createImageBitmap(file).then(function (bmp) {
      var scale = Math.min(1, 2000 / Math.max(bmp.width, bmp.height));
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(bmp.width * scale);
      canvas.height = Math.round(bmp.height * scale);
      canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
      function encode(quality) {
        return new Promise(function (done) { canvas.toBlob(done, "image/jpeg", quality); }).then(function (blob) {
          if (!blob) return file;
          if (blob.size > maxBytes && quality > 0.35) return encode(quality - 0.15);
          var name = file.name.replace(/\.[^.]*$/, "") + ".jpg";
          return new File([blob], name, { type: "image/jpeg" });
        });
      }
      return encode(0.85);
    }).catch(function () { return file; });
  }
  document.querySelectorAll("input[type=file][data-max-bytes]").forEach(function (input) {
    var maxBytes = parseInt(input.dataset.maxBytes, 10);
    var button = input.form.querySelector("button[type=submit]");
    input.addEventListener("change", function () {
      var files = Array.prototype.slice.call(input.files || []);
      if (!window.DataTransfer || !files.some(function (f) { return f.size > maxBytes; })) return;
      button.disabled = true;
      input.setCustomValidity("Shrinking images…");
      Promise.all(files.map(function (f) { return shrink(f, maxBytes); })).then(function (out) {
        var dt = new DataTransfer();
        out.forEach(function (f) { dt.items.add(f); });
        input.files = dt.files;
        input.setCustomValidity("");
        button.disabled = false;
        input.dispatchEvent(new Event("change"));
      });
    });
  });

  // Like and repost without leaving the page: send the form, read the page it returns to
  // and swap in the post's new counts. Any failure falls back to a normal submit.
  function swapPost(form) {
    var article = form.closest("article[data-post]");
    var buttons = Array.prototype.slice.call(article.querySelectorAll(".actions button"));
    var index = buttons.indexOf(form.querySelector("button"));
    var sel = 'article[data-post="' + CSS.escape(article.dataset.post) + '"]';
    fetch(form.action, { method: "POST", body: new URLSearchParams(new FormData(form)), credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector(sel);
        // The write is done; a page without the post is simply reloaded.
        if (!fresh) return location.reload();
        document.querySelectorAll(sel).forEach(function (old) {
          var copy = document.importNode(fresh, true);
          old.replaceWith(copy);
          if (old === article) copy.querySelectorAll(".actions button")[index].focus();
        });
      })
      .catch(function () { form.submit(); });
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
      return;
    }
    // A deleted post leaves its page: that form is sent normally, to follow the redirect.
    if (window.fetch && window.CSS && form.closest(".actions") && form.getAttribute("action") !== "/delete") {
      e.preventDefault();
      swapPost(form);
    }
    // Keep a form from being sent twice by a double click.
    var b = form.querySelector("button[type=submit]");
    if (b) setTimeout(function () { b.disabled = true; }, 0);
  });
})();
