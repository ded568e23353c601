// The websocket client for /ws/predict/ (protocol in docs/protocol.md): keeps one socket open,
// reconnecting by itself, numbers requests, and hands the page only answers that are newer
// than the last one it handed over, so a slow answer never overwrites a fresh one. Feedback
// (what the drawing really was) travels on the same socket under ids of its own.

/** Reconnect delays: doubling from BASE up to CAP, each with random jitter so many pages
 * do not hammer a restarted server in the same millisecond. */
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 10_000;
/** A connection that lived this long was healthy: the next drop starts the backoff afresh. */
const STABLE_AFTER_MS = 3_000;
/** The server answers every request within its own deadline (a few seconds); this guard only
 * frees the slot of an answer lost to a server fault without a closed socket. */
const ANSWER_GUARD_MS = 15_000;
/** Feedback ids are this prefix and a number: they can never equal a predict id (a bare
 * number), so the newest-answer-wins rule of predictions never sees them. */
const FEEDBACK_ID_PREFIX = "f";

export const STATE = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
});

/** The websocket URL for a server path, on the page's own host (wss: behind https:). */
export function socketUrl(path, location = window.location) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** attempt);
  return ceiling / 2 + random() * (ceiling / 2);
}

/**
 * Callbacks:
 * - `onState(state, {retryInMs})` when the connection state changes;
 * - `onAnswer(message, request)` for a `prediction` newer than any answer given before;
 * - `onError(message, request)` for an `error` likewise (`request` is null when the server
 *   could not tie the error to a request);
 * - `onSettle(pending)` whenever a request stops being in flight (answered, stale, or lost
 *   with its socket), with the number still in flight;
 * - `onFeedback(message, request)` once for every feedback sent: the server's
 *   `feedback_saved` or `error` frame, or null when no answer can come (the socket dropped, or
 *   none came in time). Feedback answers are never dropped as stale: each one is news.
 * `request` is `{id, sentAt, context}` with the context given to `predict` or `feedback`.
 */
export class PredictionClient {
  constructor(
    url,
    {
      onState = () => {},
      onAnswer = () => {},
      onError = () => {},
      onSettle = () => {},
      onFeedback = () => {},
    } = {},
  ) {
    this.url = url;
    this.onState = onState;
    this.onAnswer = onAnswer;
    this.onError = onError;
    this.onSettle = onSettle;
    this.onFeedback = onFeedback;
    this.socket = null;
    this.state = null;
    this.attempt = 0;
    this.everConnected = false;
    this.openedAt = 0;
    this.retryTimer = 0;
    this.nextId = 1;
    /** Answers with ids below this are dropped: everything sent before it is outdated. */
    this.acceptFrom = 1;
    this.inFlight = new Map();
    this.nextFeedbackId = 1;
    /** Feedback in flight, by its string id. */
    this.feedbackInFlight = new Map();

    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  get pending() {
    return this.inFlight.size;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.#setState(this.everConnected ? STATE.RECONNECTING : STATE.CONNECTING);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.openedAt = performance.now();
      this.everConnected = true;
      this.#setState(STATE.CONNECTED);
    });
    socket.addEventListener("message", (e) => this.#receive(e.data));
    socket.addEventListener("close", () => {
      if (this.socket === socket) this.#dropped();
    });
  }

  /** Retry at once instead of waiting out the backoff (the network or the tab came back). */
  reconnectNow() {
    if (this.retryTimer) this.connect();
  }

  /** Send a drawing, `{ink}` (strokes) or `{image}` (a data URL), to read as a "digit" or a
   * "number"; returns the request id, or null when the socket is not open. */
  predict(drawing, context = null, expect = "digit") {
    if (!this.isOpen) return null;
    const id = this.nextId++;
    const request = { id, sentAt: performance.now(), context };
    request.guard = setTimeout(() => this.#settle(id), ANSWER_GUARD_MS);
    this.inFlight.set(id, request);
    const frame = { type: "predict", id: String(id), ...drawing };
    if (expect !== "digit") frame.expect = expect;
    this.socket.send(JSON.stringify(frame));
    return id;
  }

  /**
   * Say what a drawing really was: `drawing` is what was predicted (`{ink}` or `{image}`),
   * `digit` the true digit, `predicted` and `model` what the answer said (null when unknown).
   * Returns the request id, or null when the socket is not open.
   */
  feedback({ drawing, digit, predicted = null, model = null }, context = null) {
    if (!this.isOpen) return null;
    const id = FEEDBACK_ID_PREFIX + this.nextFeedbackId++;
    const request = { id, sentAt: performance.now(), context };
    request.guard = setTimeout(() => this.#settleFeedback(id, null), ANSWER_GUARD_MS);
    this.feedbackInFlight.set(id, request);
    this.socket.send(
      JSON.stringify({ type: "feedback", id, ...drawing, digit, predicted, model }),
    );
    return id;
  }

  /** Ignore every answer to what was sent so far (the drawing they describe is gone). */
  discardPending() {
    this.acceptFrom = this.nextId;
  }

  #receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // Not ours to show: the protocol only sends JSON.
    }
    if (this.feedbackInFlight.has(message.id)) {
      this.#settleFeedback(message.id, message);
      return;
    }
    const id = Number(message.id);
    const request = this.inFlight.get(id) ?? null;
    if (!request) {
      // An error the server could not tie to one of our requests (a malformed frame, say).
      if (message.type === "error" && message.id == null) this.onError(message, null);
      return;
    }
    // Later answers win: one older than an answer already given (or than a discard) is dropped.
    if (id >= this.acceptFrom) {
      this.acceptFrom = id + 1;
      if (message.type === "prediction") this.onAnswer(message, request);
      else if (message.type === "error") this.onError(message, request);
    }
    this.#settle(id);
  }

  #settle(id) {
    const request = this.inFlight.get(id);
    if (!request) return;
    clearTimeout(request.guard);
    this.inFlight.delete(id);
    this.onSettle(this.inFlight.size);
  }

  #settleFeedback(id, message) {
    const request = this.feedbackInFlight.get(id);
    if (!request) return;
    clearTimeout(request.guard);
    this.feedbackInFlight.delete(id);
    this.onFeedback(message, request);
  }

  #dropped() {
    // Answers to requests on the old socket can never arrive: free their slots. The page
    // asks again for the current drawing once the new socket is open; feedback is not resent
    // by itself (the person may have moved on), the page says it was not saved.
    for (const id of [...this.inFlight.keys()]) this.#settle(id);
    for (const id of [...this.feedbackInFlight.keys()]) this.#settleFeedback(id, null);
    if (this.openedAt && performance.now() - this.openedAt > STABLE_AFTER_MS) this.attempt = 0;
    this.openedAt = 0;
    const retryInMs = backoffDelay(this.attempt++);
    this.retryTimer = setTimeout(() => this.connect(), retryInMs);
    this.#setState(navigator.onLine === false ? STATE.OFFLINE : STATE.RECONNECTING, {
      retryInMs,
    });
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }
}
