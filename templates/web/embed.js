/* The embedded sign-up form, sent in place: digest's /subscribe/embed.js.
   Optional: without it the form posts as a plain form and the answer is a page of ours. */
(function () {
  "use strict";

  function field(form, name) {
    return name === "regions" ? form.querySelector(".digest-signup__regions") : form.elements[name];
  }

  function clearErrors(form) {
    form.querySelectorAll(".digest-signup__error").forEach(function (p) { p.remove(); });
    form.querySelectorAll("[aria-invalid]").forEach(function (el) {
      el.removeAttribute("aria-invalid");
      el.removeAttribute("aria-describedby");
    });
  }

  function showErrors(form, errors) {
    var first = null;
    Object.keys(errors).forEach(function (name) {
      var el = field(form, name);
      if (!el) return;
      var p = document.createElement("p");
      p.className = "digest-signup__error";
      p.id = (el.id || "digest-signup-" + name) + "-error";
      p.textContent = errors[name];
      (el.closest(".digest-signup__field") || el).appendChild(p);
      el.setAttribute("aria-invalid", "true");
      el.setAttribute("aria-describedby", p.id);
      first = first || el;
    });
    if (first && first.focus) first.focus();
  }

  function setup(form) {
    var started = form.elements.started;
    var status = form.querySelector(".digest-signup__status");
    var button = form.querySelector("button[type=submit]");
    var json = { Accept: "application/json" };
    fetch(form.action + "/start", { headers: json, credentials: "omit" })
      .then(function (r) { return r.json(); })
      .then(function (d) { started.value = d.started; })
      .catch(function () { /* the plain form still works */ });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      clearErrors(form);
      button.disabled = true;
      status.textContent = "Sending…";
      fetch(form.action, {
        method: "POST", headers: json, credentials: "omit",
        body: new URLSearchParams(new FormData(form))
      })
        .then(function (r) {
          if (r.status === 429) {
            return { message: "There have been too many attempts from your network. Please try again later." };
          }
          return r.json();
        })
        .then(function (d) {
          button.disabled = false;
          status.textContent = d.message || "";
          if (d.started) started.value = d.started;
          if (d.errors) { status.textContent = "Please correct the marked field."; showErrors(form, d.errors); }
          if (d.ok) { form.classList.add("digest-signup--done"); form.reset(); }
        })
        .catch(function () {
          // No answer we can read: send it the plain way, which always works.
          HTMLFormElement.prototype.submit.call(form);
        });
    });
  }

  document.querySelectorAll("form[data-digest-signup]").forEach(setup);
})();
