// Test chat: sends the typed message over the console's WebSocket and writes the reply
// into the transcript token by token as the worker generates it. No library: the
// protocol is small (see switchboard/console/consumers.py).
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root) return;
  var t = root.dataset;
  var log = document.getElementById("chat-log");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var send = document.getElementById("chat-send");
  var status = document.getElementById("chat-status");

  var socket = null;
  var retryMs = 500;
  // The server answers every frame, in order, with "accepted" or an error: the replies
  // still waiting for that answer, oldest first.
  var awaiting = [];
  // Replies being written, by inbound message id.
  var writing = {};

  function setStatus(text) {
    status.textContent = text;
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function bubble(direction, text) {
    var empty = document.getElementById("chat-empty");
    if (empty) empty.remove();
    var el = document.createElement("div");
    el.className = "msg " + direction;
    var body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    el.appendChild(body);
    log.appendChild(el);
    scrollDown();
    return el;
  }

  function setText(el, text) {
    el.querySelector(".text").textContent = text;
  }

  function setMeta(el, text) {
    var meta = el.querySelector(".meta");
    if (!meta) {
      meta = document.createElement("div");
      meta.className = "meta";
      el.appendChild(meta);
    }
    meta.textContent = text;
  }

  function ms(value) {
    return value === null || value === undefined ? "–" : Math.round(value) + " ms";
  }

  function usage(event) {
    var parts = [
      event.prompt_tokens + " + " + event.completion_tokens + " " + t.tTokens,
      t.tTtft + " " + ms(event.ttft_ms),
      t.tLatency + " " + ms(event.latency_ms),
    ];
    if (event.endpoint) parts.push(event.endpoint);
    return parts.join(" · ");
  }

  function fail(el, text) {
    el.classList.remove("writing");
    el.classList.add("failed");
    setMeta(el, text);
    scrollDown();
  }

  function onEvent(event) {
    var reply;
    switch (event.type) {
      case "accepted":
        reply = awaiting.shift();
        if (reply) writing[event.message] = { el: reply, text: "", failed: false };
        break;
      case "delta":
        reply = writing[event.message];
        if (!reply) return;
        if (reply.failed) {
          // The worker retries a failed generation from the start: a new attempt.
          reply.failed = false;
          reply.text = "";
          reply.el.classList.remove("failed");
          reply.el.classList.add("writing");
          setMeta(reply.el, "");
        }
        reply.text += event.text;
        setText(reply.el, reply.text);
        scrollDown();
        break;
      case "done":
        reply = writing[event.message];
        if (!reply) return;
        delete writing[event.message];
        reply.el.classList.remove("writing", "failed");
        // The stored reply is the truth, whatever deltas the socket may have dropped.
        setText(reply.el, event.text || "");
        if (event.refusal) {
          reply.el.classList.add("refused");
          setMeta(reply.el, t.tRefused + " " + event.refusal);
        } else {
          setMeta(reply.el, usage(event));
        }
        scrollDown();
        break;
      case "error":
        if (event.message) {
          reply = writing[event.message];
          if (!reply) return;
          reply.failed = true;
          fail(reply.el, t.tFailed + " " + event.error + " " + t.tRetrying);
        } else {
          // Refused before anything was stored (not found, empty, too long).
          reply = awaiting.shift();
          if (reply) fail(reply, event.error);
        }
        break;
    }
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setStatus(t.tConnecting);
    socket = new WebSocket(scheme + location.host + t.wsPath);
    socket.onopen = function () {
      retryMs = 500;
      send.disabled = false;
      setStatus(t.tConnected);
    };
    socket.onmessage = function (message) {
      onEvent(JSON.parse(message.data));
    };
    socket.onclose = function () {
      send.disabled = true;
      // Replies pending on the old socket will not reach this page; they are in the
      // conversation's transcript once generated.
      awaiting.forEach(function (el) {
        fail(el, t.tReconnecting);
      });
      Object.keys(writing).forEach(function (id) {
        fail(writing[id].el, t.tReconnecting);
      });
      awaiting = [];
      writing = {};
      setStatus(t.tReconnecting);
      window.setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value;
    if (!text.trim()) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      setStatus(t.tOffline);
      return;
    }
    bubble("in", text);
    var reply = bubble("out", "");
    reply.classList.add("writing");
    awaiting.push(reply);
    socket.send(JSON.stringify({ bot: t.bot, text: text, conversation: t.conversation }));
    input.value = "";
    input.focus();
  });

  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  scrollDown();
  connect();
})();
