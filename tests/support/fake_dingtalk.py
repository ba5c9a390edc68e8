"""A fake DingTalk for tests: session webhooks, access tokens and the robot OpenAPI on
127.0.0.1, plus signed callback requests shaped like DingTalk's (PROTOCOLS.md §A, §B.6, §C).

    with FakeDingTalk() as ding:                    # app/robot below are pre-registered
        headers, body = ding.make_callback(text="hi", conversation_type="2")
        ...  # POST them to the ingress; the handle's sessionWebhook points at the fake
        sender = DingTalkSender(client, api_base=ding.base_url)
        ding.wait_for_sent(1)[0].text

Routes (the `via` names used by `sent`, `fail_http` and `requests`):
- "session_webhook": `POST /robot/sendBySession?session=<token>`. Known tokens come from
  `session_webhook_url()` / `make_callback()`; an unknown or expired one answers
  `{"errcode":300001,"errmsg":"token is not exist"}` (what DingTalk answers for an expired
  session is not documented; this is our stand-in).
- "token": `POST /v1.0/oauth2/accessToken` `{appKey, appSecret}` -> `{accessToken, expireIn}`.
  Wrong credentials: HTTP 400 `{"code":"invalidClientIdOrSecret"}` (code not verified).
- "oto": `POST /v1.0/robot/oToMessages/batchSend`; "group": `POST /v1.0/robot/groupMessages/send`.
  A missing/unknown token answers HTTP 400 `InvalidAuthentication` as DingTalk does.

Every accepted message is appended to `sent` (a `Sent`). Every request, accepted or not,
is appended to `requests` as `(via, http_status)`. All state is guarded by one lock, so
the fake may be driven from test code while Celery threads or processes post to it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connectors.dingtalk.verify import compute_sign

DEFAULT_APP_KEY = "dingfakeappkey"
DEFAULT_APP_SECRET = "fake-app-secret-0123456789abcdefghijklmnopqrstuv"
DEFAULT_ROBOT_CODE = "dingfakerobot"
ROUTES = {
    "/robot/sendBySession": "session_webhook",
    "/v1.0/oauth2/accessToken": "token",
    "/v1.0/robot/oToMessages/batchSend": "oto",
    "/v1.0/robot/groupMessages/send": "group",
}


@dataclass(frozen=True)
class Sent:
    """One message the fake accepted. `text`/`msgtype`/`at_user_ids` are normalised across
    the webhook and OpenAPI shapes; `body` is the request JSON exactly as received."""

    via: str  # "session_webhook" | "oto" | "group"
    body: dict[str, Any]
    session: str | None = None
    token: str | None = None

    @property
    def msgtype(self) -> str:
        if self.via == "session_webhook":
            return str(self.body.get("msgtype"))
        return {"sampleText": "text", "sampleMarkdown": "markdown"}.get(
            str(self.body.get("msgKey")), str(self.body.get("msgKey"))
        )

    @property
    def param(self) -> dict[str, Any]:
        """The message's own fields: `text`/`markdown` object, or the parsed msgParam."""
        if self.via == "session_webhook":
            value = self.body.get(self.msgtype)
            return value if isinstance(value, dict) else {}
        return json.loads(self.body.get("msgParam") or "{}")

    @property
    def text(self) -> str:
        return str(self.param.get("content", self.param.get("text", "")))

    @property
    def title(self) -> str | None:
        return self.param.get("title")

    @property
    def at_user_ids(self) -> list[str]:
        return list((self.body.get("at") or {}).get("atUserIds") or [])


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeDingTalk:
    def __init__(
        self,
        *,
        app_key: str = DEFAULT_APP_KEY,
        app_secret: str = DEFAULT_APP_SECRET,
        robot_code: str = DEFAULT_ROBOT_CODE,
        token_ttl_s: int = 7200,
    ) -> None:
        self.app_key, self.app_secret, self.robot_code = app_key, app_secret, robot_code
        self.token_ttl_s = token_ttl_s
        self.sent: list[Sent] = []
        self.requests: list[tuple[str, int]] = []
        self.token_calls = 0
        # Largest accepted webhook text/content in UTF-8 bytes; None: no limit (unknown).
        self.webhook_max_bytes: int | None = None
        self._apps = {app_key: app_secret}
        self._robots = {robot_code}
        self._stopped: set[str] = set()
        self._sessions: set[str] = set()
        self._tokens: dict[str, str] = {}
        self._flow_controlled: set[str] = set()
        self._invalid_staff: set[str] = set()
        self._failures: dict[str, deque[_Failure | None]] = {
            via: deque() for via in ROUTES.values()
        }
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps shutdown() quick; tests start one fake each.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> FakeDingTalk:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget messages, requests, counters and injected faults; keep registrations."""
        with self._lock:
            self.sent.clear()
            self.requests.clear()
            self.token_calls = 0
            for queue in self._failures.values():
                queue.clear()
            self._stopped.clear()
            self._flow_controlled.clear()
            self._invalid_staff.clear()

    # -- registration ----------------------------------------------------------------

    def register_app(self, app_key: str, app_secret: str) -> None:
        with self._lock:
            self._apps[app_key] = app_secret

    def register_robot(self, robot_code: str) -> None:
        with self._lock:
            self._robots.add(robot_code)

    def session_webhook_url(self, token: str | None = None) -> str:
        """A session webhook URL on this fake; its token is registered as valid."""
        token = token or uuid.uuid4().hex
        with self._lock:
            self._sessions.add(token)
        return f"{self.base_url}/robot/sendBySession?session={token}"

    def expire_session(self, token: str) -> None:
        with self._lock:
            self._sessions.discard(token)

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far (as if they expired early)."""
        with self._lock:
            self._tokens.clear()

    # -- fault injection -------------------------------------------------------------

    def throttle_session_webhook(
        self, times: int = 1, *, errcode: int = 130101, after: int = 0
    ) -> None:
        """The next `times` webhook sends answer HTTP 200 with a throttling errcode."""
        errmsg = {
            130101: "send too fast, exceed 20 times per minute",
            410100: "send too fast",
        }.get(errcode, "throttled")
        self.webhook_error(errcode, errmsg, times=times, after=after)

    def webhook_error(self, errcode: int, errmsg: str, *, times: int = 1, after: int = 0) -> None:
        """The next `times` webhook sends answer HTTP 200 `{"errcode","errmsg"}` (e.g.
        310000 "keywords not in content", 300001 "token is not exist").

        `after` (here and in `fail_http`): let that many requests through normally first,
        e.g. to fail the second part of a split reply."""
        failure = _Failure(200, {"errcode": errcode, "errmsg": errmsg})
        self._inject("session_webhook", failure, times, after)

    def fail_http(
        self,
        via: str,
        status: int,
        *,
        times: int = 1,
        code: str | None = None,
        message: str = "injected failure",
        retry_after: str | None = None,
        after: int = 0,
    ) -> None:
        """The next `times` requests on route `via` answer HTTP `status` with an OpenAPI
        error body (`code`, `message`, `requestid`), and `Retry-After` if given."""
        if via not in self._failures:
            raise ValueError(f"unknown route {via!r}; one of {sorted(self._failures)}")
        body: dict[str, Any] = {"message": message, "requestid": uuid.uuid4().hex.upper()}
        if code:
            body["code"] = code
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._inject(via, _Failure(status, body, headers), times, after)

    def stop_bot(self, robot_code: str | None = None) -> None:
        """OpenAPI sends for this robot answer HTTP 400 `bot.stopped` until `reset()`."""
        with self._lock:
            self._stopped.add(robot_code or self.robot_code)

    def flow_control(self, staff_id: str) -> None:
        """batchSend lists this user in `flowControlledStaffIdList` and does not deliver."""
        with self._lock:
            self._flow_controlled.add(staff_id)

    def invalid_staff(self, staff_id: str) -> None:
        """batchSend lists this user in `invalidStaffIdList` and does not deliver."""
        with self._lock:
            self._invalid_staff.add(staff_id)

    def _inject(self, via: str, failure: _Failure, times: int, after: int) -> None:
        with self._lock:
            # None entries are pass-throughs: those requests are handled normally.
            self._failures[via].extend([None] * after + [failure] * times)

    # -- reading results -------------------------------------------------------------

    def sent_via(self, via: str) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.via == via]

    def wait_for_sent(self, count: int, *, timeout: float = 10.0) -> list[Sent]:
        """Block until at least `count` messages were accepted; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.sent) >= count:
                    return list(self.sent)
                have = len(self.sent)
            if time.monotonic() > deadline:
                raise AssertionError(f"fake DingTalk got {have} message(s), wanted {count}")
            time.sleep(0.02)

    # -- callbacks as DingTalk sends them --------------------------------------------

    def make_callback(
        self,
        *,
        text: str = "hello",
        msgtype: str = "text",
        conversation_type: str = "1",
        app_secret: str | None = None,
        sender_staff_id: str = "staff-001",
        sender_nick: str = "张三",
        conversation_id: str = "cidFAKEconversation==",
        msg_id: str | None = None,
        now_ms: int | None = None,
        webhook_ttl_ms: int = 5_400_000,
        robot_code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of a signed robot callback, as DingTalk would POST them.

        For `text` the content gets DingTalk's leading space (" hello"); for `audio` the
        text is the speech recognition; `richText` puts it between a picture and nothing;
        `picture`/`video`/`file` ignore it. The session webhook points at this fake and
        expires `webhook_ttl_ms` after `now_ms`. `extra` overrides or adds body fields.
        """
        now = int(time.time() * 1000) if now_ms is None else now_ms
        n = next(self._counter)
        body: dict[str, Any] = {
            "conversationId": conversation_id,
            "chatbotCorpId": "dingfakecorp",
            "chatbotUserId": "$:LWCP_v1:$fakeRobotUser",
            "msgId": msg_id or f"msgFAKE{n:06d}{uuid.uuid4().hex[:8]}==",
            "senderNick": sender_nick,
            "isAdmin": False,
            "senderStaffId": sender_staff_id,
            "sessionWebhookExpiredTime": now + webhook_ttl_ms,
            "createAt": now,
            "senderCorpId": "dingfakecorp",
            "conversationType": conversation_type,
            "senderId": f"$:LWCP_v1:$fakeSender{sender_staff_id}",
            "sessionWebhook": self.session_webhook_url(),
            "robotCode": robot_code or self.robot_code,
            "msgtype": msgtype,
        }
        if conversation_type == "2":
            body["conversationTitle"] = "测试群"
            body["isInAtList"] = True
            body["atUsers"] = [{"dingtalkId": "$:LWCP_v1:$fakeRobotUser"}]
        body.update(_content_for(msgtype, text))
        body.update(extra or {})
        timestamp = str(now)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "timestamp": timestamp,
            "sign": compute_sign(timestamp, app_secret or self.app_secret),
        }
        return headers, json.dumps(body, ensure_ascii=False).encode("utf-8")

    # -- the HTTP side ---------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, keep-alive clients
            # wait ~40 ms (delayed ACK) for every response.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                via = ROUTES.get(url.path)
                if via is None:
                    self._answer(404, {"code": "notFound", "message": url.path})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except (json.JSONDecodeError, UnicodeDecodeError):
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer, extra = fake._handle(via, url.query, headers, body)
                self._answer(status, answer, extra)

            def _answer(
                self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _handle(
        self, via: str, query: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            failures = self._failures[via]
            failure = failures.popleft() if failures else None
            if failure is not None:
                self.requests.append((via, failure.status))
                return failure.status, failure.body, failure.headers
            if not isinstance(body, dict):
                status, answer = _bad_request(via, "body is not a JSON object")
            elif via == "session_webhook":
                status, answer = self._webhook(query, body)
            elif via == "token":
                status, answer = self._token(body)
            else:
                status, answer = self._openapi(via, headers, body)
            self.requests.append((via, status))
            return status, answer, {}

    def _webhook(self, query: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        session = (parse_qs(query).get("session") or [""])[0]
        if session not in self._sessions:
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}
        msgtype = body.get("msgtype")
        part = body.get(msgtype) if isinstance(msgtype, str) else None
        text = (
            part.get("content" if msgtype == "text" else "text") if isinstance(part, dict) else None
        )
        if msgtype not in ("text", "markdown") or not isinstance(text, str) or not text:
            # Fake-only code: DingTalk's answer to a malformed body is not documented.
            return 200, {"errcode": 40035, "errmsg": "missing or invalid message parameter"}
        if msgtype == "markdown" and not part.get("title"):
            return 200, {"errcode": 40035, "errmsg": "markdown needs a title"}
        if self.webhook_max_bytes is not None and len(text.encode()) > self.webhook_max_bytes:
            return 200, {"errcode": 460101, "errmsg": "message too long (fake limit)"}
        self.sent.append(Sent("session_webhook", body, session=session))
        return 200, {"errcode": 0, "errmsg": "ok"}

    def _token(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.token_calls += 1
        key, secret = body.get("appKey"), body.get("appSecret")
        if not key or self._apps.get(key) != secret:
            return 400, {
                "code": "invalidClientIdOrSecret",
                "message": "无效的clientId或者clientSecret",
            }
        token = f"fake-token-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        self._tokens[token] = key
        return 200, {"accessToken": token, "expireIn": self.token_ttl_s}

    def _openapi(
        self, via: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        token = headers.get("x-acs-dingtalk-access-token", "")
        if token not in self._tokens:
            return _error(400, "InvalidAuthentication", "不合法的access_token")
        robot = body.get("robotCode")
        if not robot:
            return _error(400, "invalidParameter.robotCode.empty", "robotCode is empty")
        if robot not in self._robots:
            return _error(400, "invalidParameter.robotCode.notExsit", "robot does not exist")
        if robot in self._stopped:
            return _error(400, "bot.stopped", "the robot is stopped")
        msg_key = body.get("msgKey")
        if msg_key not in ("sampleText", "sampleMarkdown"):
            return _error(400, "invalidParameter.msgKey.invalid", f"msgKey {msg_key!r}")
        param_raw = body.get("msgParam")
        try:
            param = json.loads(param_raw) if isinstance(param_raw, str) else None
        except json.JSONDecodeError:
            param = None
        needed = ("content",) if msg_key == "sampleText" else ("title", "text")
        if not isinstance(param, dict) or not all(param.get(k) for k in needed):
            return _error(
                400, "invalidParameter.msgParam.invalid", "msgParam must be a JSON string"
            )
        if via == "group" and not body.get("openConversationId"):
            return _error(400, "invalid.openConversationId", "openConversationId is empty")
        # Documented for group sends (PROTOCOLS §B.6); the fake applies it to both.
        if len(param_raw.encode()) > 15_000:
            return _error(400, "invalidParameter.msgParam.invalid", "msgParam over 15000 bytes")
        key = f"pqk-{uuid.uuid4().hex}"
        if via == "group":
            self.sent.append(Sent(via, body, token=token))
            return 200, {"processQueryKey": key}
        users = body.get("userIds")
        if not isinstance(users, list) or not users:
            return _error(400, "invalidParameter.userIds.empty", "userIds is empty")
        invalid = [u for u in users if u in self._invalid_staff]
        limited = [u for u in users if u in self._flow_controlled and u not in invalid]
        if len(invalid) + len(limited) < len(users):
            self.sent.append(Sent(via, body, token=token))
        return 200, {
            "processQueryKey": key,
            "invalidStaffIdList": invalid,
            "flowControlledStaffIdList": limited,
        }


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message, "requestid": uuid.uuid4().hex.upper()}


def _bad_request(via: str, why: str) -> tuple[int, dict[str, Any]]:
    if via == "session_webhook":
        return 200, {"errcode": 40035, "errmsg": why}
    return _error(400, "MissingParameter", why)


def _content_for(msgtype: str, text: str) -> dict[str, Any]:
    download = {"downloadCode": "fakeDownloadCode=="}
    if msgtype == "text":
        return {"text": {"content": " " + text}}
    if msgtype == "richText":
        picture = {"type": "picture", "pictureDownloadCode": "fakePic==", **download}
        return {"content": {"richText": [picture, {"text": text}]}}
    if msgtype == "audio":
        return {"content": {"duration": 3000, "recognition": text, **download}}
    if msgtype == "picture":
        return {"content": {"pictureDownloadCode": "fakePic==", **download}}
    if msgtype == "video":
        return {"content": {"duration": "8", "videoType": "mp4", **download}}
    if msgtype == "file":
        return {"content": {"spaceId": "1", "fileName": "a.pdf", "fileId": "f1", **download}}
    return {}
