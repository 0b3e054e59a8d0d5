// walletsvc console: the navigator.credentials calls for passkeys, and nothing else.
// The server renders the WebAuthn options (JSON) into data- attributes; this script turns
// them into the browser's types, asks the authenticator, and puts the answer (JSON) into a
// hidden field of the same form, which is then submitted as a normal form post.
"use strict";

(function () {
  function toBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (c) {
      return { type: c.type, id: toBytes(c.id), transports: c.transports };
    });
  }

  function creationOptions(json) {
    var o = JSON.parse(json);
    o.challenge = toBytes(o.challenge);
    o.user.id = toBytes(o.user.id);
    o.excludeCredentials = descriptors(o.excludeCredentials);
    return o;
  }

  function requestOptions(json) {
    var o = JSON.parse(json);
    o.challenge = toBytes(o.challenge);
    o.allowCredentials = descriptors(o.allowCredentials);
    return o;
  }

  function credentialJSON(cred) {
    var r = cred.response;
    var response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) { response.userHandle = toB64url(r.userHandle); }
    }
    return JSON.stringify({
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: response,
      authenticatorAttachment: cred.authenticatorAttachment || null,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    });
  }

  function say(form, text) {
    var status = form.querySelector("[role=status]");
    if (status) { status.textContent = text; } else { window.alert(text); }
  }

  var register = document.getElementById("passkey-register");
  if (register) {
    register.addEventListener("submit", function (event) {
      if (register.elements.credential.value) { return; }
      event.preventDefault();
      navigator.credentials.create({ publicKey: creationOptions(register.dataset.options) })
        .then(function (cred) {
          register.elements.credential.value = credentialJSON(cred);
          register.submit();
        })
        .catch(function (err) { say(register, "No passkey was created: " + err.message); });
    });
  }

  document.querySelectorAll("form.decide").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var choice = form.querySelector(".use-passkey");
      if (!choice || !choice.checked || form.elements.passkey.value) { return; }
      event.preventDefault();
      var submitter = event.submitter;
      var decision = submitter ? submitter.value : "approve";
      var options = decision === "reject" ? form.dataset.passkeyReject : form.dataset.passkeyApprove;
      navigator.credentials.get({ publicKey: requestOptions(options) })
        .then(function (cred) {
          form.elements.passkey.value = credentialJSON(cred);
          form.requestSubmit(submitter);
        })
        .catch(function (err) { say(form, "The passkey did not sign: " + err.message); });
    });
  });
})();
