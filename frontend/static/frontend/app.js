// The page: wires the drawing pad to the prediction socket and shows the answers.
//
// When to ask: while a stroke grows (throttled, at most a couple of requests in flight), at
// once when it ends, on Predict/Enter, after Undo, and again after a reconnect if the answer
// shown no longer matches the drawing.
//
// Feedback: once an answer describes the drawing on the pad, "Right" or "it was: 0…9" (or a
// digit key) sends that drawing's ink back with the true digit, once per drawing.
//
// "A number" mode: a pad twice as wide as high, requests that expect a number; the answer's
// digits go in #prediction, a box over each digit on the pad, and the bars and 28x28 image of
// the digit hovered (on the pad or in the number) or tapped. Feedback is for single digits.

import { DrawingPad } from "./drawing.js";
import { PredictionClient, STATE, socketUrl } from "./predictions.js";

/** Height of the drawing area whose whole pixels the ink sent to the server is measured in (a
 * PNG for another client would be drawn this high). The server crops the ink and scales it to
 * 20 pixels, so a finer grid buys nothing but bytes: a digit across half the pad still has 96. */
const EXPORT_SIZE = 192;
/** The pad's width over its height in each mode (the export keeps EXPORT_SIZE's height). */
const ASPECT = { digit: 1, number: 2 };
/** Minimum time between two live predictions during one stroke. */
const LIVE_INTERVAL_MS = 150;
/** Live requests in flight at once; more would only queue behind each other. */
const MAX_LIVE_IN_FLIGHT = 2;
/** After `rate_limited`, ask again for the current drawing after this pause. */
const RETRY_BUSY_MS = 1_000;
/** Below this the answer comes with the runner-up, so a person sees what the model hesitates on. */
const UNSURE_BELOW = 0.6;
/** Shown in place of the digit when the server answers `is_digit: false`. */
const NOT_A_DIGIT_TEXT = "That doesn't look like a digit";
/** How long "Saved, thank you" stays on screen. */
const THANKS_MS = 2_500;

const FEEDBACK_TEXT = {
  saving: "Saving…",
  saved: "Saved, thank you",
  duplicate: "Already saved",
  lost: "Not saved: no answer from the server. Try again.",
  offline: "Not saved: not connected. Try again once the connection is back.",
};

const HINT_TEXT = {
  digit: "Draw one digit, 0 to 9, with a mouse, finger or pen. The answer updates as you draw.",
  number: "Write a number, digits side by side, with a mouse, finger or pen. The answer updates as you draw.",
};

/** An entry of ERROR_TEXT that shows the server's own sentence (it names the limit or the failure). */
const SERVER_TEXT = null;
const UNREADABLE_DRAWING = "The server could not read the drawing. Reset and draw again.";
const PAGE_FAULT = "The server could not read what the page sent. Reload the page and try again.";
/** What the page says for each error code the socket can send (classifier/serving/protocol.py;
 * tests/frontend/test_error_codes.py holds the two to each other). */
const ERROR_TEXT = {
  empty: "Draw a digit first: the canvas is blank.",
  too_many_digits: "Too many digits: a number may have at most 12.",
  rate_limited: "Too many requests at once. Slow down a little; the page asks again in a moment.",
  unavailable: "No model worker is running, so nobody can answer. Start a worker and try again.",
  timeout: "No answer in time: the model is very busy or no worker is running. Try again.",
  internal: SERVER_TEXT,
  invalid_image: UNREADABLE_DRAWING,
  bad_ink: UNREADABLE_DRAWING,
  too_large: "The drawing has too many strokes or points. Reset and draw again, more simply.",
  image_too_large: "The drawing is too large to send. Reset and draw again, more simply.",
  frame_too_large: "The drawing is too large to send. Reset and draw again, more simply.",
  feedback_limit:
    "Thank you: that is as many corrections as one person may send in an hour. Please try again later.",
  too_many_connections: SERVER_TEXT,
  // The page sends none of these; a server that answers them has met another version of the page.
  binary_frame: PAGE_FAULT,
  bad_json: PAGE_FAULT,
  bad_frame: PAGE_FAULT,
  unknown_type: PAGE_FAULT,
  bad_id: PAGE_FAULT,
  bad_label: PAGE_FAULT,
  bad_data_url: PAGE_FAULT,
  unsupported_type: PAGE_FAULT,
  bad_base64: PAGE_FAULT,
};
const RETRY_CODES = new Set(["rate_limited"]);

const CONNECTION_TEXT = {
  [STATE.CONNECTING]: "Connecting…",
  [STATE.CONNECTED]: "Connected",
  [STATE.RECONNECTING]: "Reconnecting…",
  [STATE.OFFLINE]: "Offline: waiting for the network",
};

const $ = (id) => document.getElementById(id);
const ui = {
  canvas: $("pad"),
  predict: $("predict"),
  undo: $("undo"),
  reset: $("reset"),
  connection: $("connection"),
  connectionText: $("connection-text"),
  answer: $("answer"),
  prediction: $("prediction"),
  confidence: $("confidence"),
  message: $("message"),
  bars: [...document.querySelectorAll("#probabilities li")],
  probabilities: document.getElementById("probabilities"),
  preview: $("preview"),
  model: $("model-version"),
  latency: $("latency"),
  feedback: $("feedback"),
  feedbackRight: $("feedback-right"),
  feedbackDigits: [...document.querySelectorAll("#feedback [data-digit]")],
  feedbackStatus: $("feedback-status"),
  hint: $("pad-hint"),
  boxes: $("boxes"),
  modes: [...document.querySelectorAll('input[name="mode"]')],
};
const feedbackButtons = [ui.feedbackRight, ...ui.feedbackDigits];

const percent = (p) => `${(p * 100).toFixed(p >= 0.995 || p < 0.1 ? 0 : 1)}%`;

let lastSentAt = -Infinity;
let strokeStartedAt = -Infinity;
let sentVersion = -1;
let shownVersion = 0;
let liveTimer = 0;
let retryTimer = 0;
let askWhenConnected = false;
/** The answer on screen and the drawing it describes: `{version, drawing, digit, model}`. */
let answered = null;
/** The id of the feedback in flight (one at a time), or null. */
let feedbackInFlight = null;
/** The pad version whose feedback was saved: one feedback per drawing. */
let savedVersion = -1;
let thanksTimer = 0;
/** "digit" or "number": what the pad's drawing is read as. */
let mode = "digit";
/** The digits of the number on screen (number mode), or null. */
let shownDigits = null;

const pad = new DrawingPad(ui.canvas, { onChange: padChanged });
const client = new PredictionClient(socketUrl(document.body.dataset.wsPath), {
  onState: connectionChanged,
  onAnswer: showAnswer,
  onError: showError,
  onSettle: requestSettled,
  onFeedback: feedbackAnswered,
});

function padChanged(reason) {
  ui.undo.disabled = pad.isEmpty;
  ui.reset.disabled = pad.isEmpty;
  ui.answer.dataset.pad = pad.isEmpty ? "blank" : "drawn";
  switch (reason) {
    case "stroke-start":
      // A stroke's first dot says little: the first live request waits for some ink.
      strokeStartedAt = performance.now();
      break;
    case "draw":
      scheduleLive();
      break;
    case "stroke-end":
      predictNow();
      break;
    case "undo":
      client.discardPending();
      if (pad.isEmpty) showNothing();
      else predictNow();
      break;
    case "clear":
      client.discardPending();
      showNothing();
      break;
  }
  updateFeedback();
}

function send() {
  clearTimeout(liveTimer);
  liveTimer = 0;
  // The drawing is sent as ink: the strokes, not a picture of them. It rides along in the
  // context: feedback on the answer sends the very same one.
  const drawing = { ink: pad.toInk(EXPORT_SIZE) };
  const exported = { width: Math.round(EXPORT_SIZE * pad.aspect), height: EXPORT_SIZE };
  client.predict(drawing, { version: pad.version, drawing, mode, exported }, mode);
  sentVersion = pad.version;
  lastSentAt = performance.now();
  ui.answer.setAttribute("aria-busy", "true");
}

/** Ask for the drawing as it is now, whatever is in flight (stroke end, Predict, Undo). */
function predictNow() {
  if (!client.isOpen) {
    askWhenConnected = true;
    say("Not connected yet: the answer comes as soon as the connection is back.");
    return;
  }
  send();
}

/** Ask during a stroke, at most every LIVE_INTERVAL_MS and without piling up requests. */
function scheduleLive() {
  if (liveTimer || !client.isOpen) return;
  const due = Math.max(lastSentAt, strokeStartedAt) + LIVE_INTERVAL_MS;
  const wait = Math.max(0, due - performance.now());
  liveTimer = setTimeout(() => {
    liveTimer = 0;
    if (pad.isDrawing && pad.version !== sentVersion && client.pending < MAX_LIVE_IN_FLIGHT) {
      send();
    }
  }, wait);
}

/** Ask again if the answer on screen no longer describes the drawing (after a reconnect or
 * a busy server), unless the person is mid-stroke: their stroke end will ask. */
function refreshIfStale() {
  if (!client.isOpen || pad.isDrawing) return;
  if (askWhenConnected || (!pad.isEmpty && shownVersion !== pad.version)) {
    askWhenConnected = false;
    send();
  }
}

/** A request left the air: a slot for live requests is free, and maybe nothing is pending. */
function requestSettled(pending) {
  if (pending === 0) ui.answer.removeAttribute("aria-busy");
  if (pad.isDrawing) scheduleLive();
}

function showAnswer(answer, request) {
  if (request.context.mode !== mode) return; // asked before the mode changed
  // Answers can come back out of order (live requests overlap): one for an older drawing never
  // replaces the answer to a newer one.
  if (request.context.version < shownVersion) return;
  if (Array.isArray(answer.digits)) {
    showNumber(answer, request);
    return;
  }
  const probabilities = answer.probabilities ?? [];
  const ranked = probabilities.map((p, digit) => [p, digit]).sort((a, b) => b[0] - a[0]);
  // The model's score says it is no digit at all: say so, and grey the bars.
  const notDigit = answer.is_digit === false;
  ui.prediction.textContent = notDigit ? NOT_A_DIGIT_TEXT : String(answer.digit);
  ui.prediction.classList.toggle("not-digit", notDigit);
  ui.probabilities.classList.toggle("not-digit", notDigit);
  let confidence = `${percent(answer.confidence)} sure`;
  if (notDigit) {
    confidence = ranked.length ? `Closest digit: ${ranked[0][1]} (${percent(ranked[0][0])})` : "";
  } else if (answer.confidence < UNSURE_BELOW && ranked.length > 1) {
    const [p, digit] = ranked[1][1] === answer.digit ? ranked[0] : ranked[1];
    confidence += `, maybe a ${digit} (${percent(p)})`;
  }
  ui.confidence.textContent = confidence;
  ui.bars.forEach((li, digit) => setBar(li, probabilities[digit] ?? 0, digit === answer.digit));
  if (answer.preview) {
    ui.preview.src = answer.preview;
    ui.preview.hidden = false;
  }
  ui.model.textContent = answer.model || "unknown";
  ui.latency.textContent = `· answered in ${Math.round(performance.now() - request.sentAt)} ms`;
  ui.answer.dataset.requestId = String(request.id);
  shownVersion = request.context.version;
  answered = {
    version: request.context.version,
    drawing: request.context.drawing,
    digit: answer.digit,
    model: answer.model || null,
  };
  updateFeedback();
  say("");
}

function showNumber(answer, request) {
  const digits = answer.digits;
  // A second answer for the same drawing (a live one, then the final one) keeps the digit the
  // person is looking at, rather than jumping back to the first.
  const same =
    shownDigits !== null &&
    shownVersion === request.context.version &&
    shownDigits.length === digits.length;
  const selected = same ? Number(ui.answer.dataset.selected ?? 0) : 0;
  ui.prediction.replaceChildren(
    ...digits.map((d, index) => {
      const span = document.createElement("span");
      span.className = "number-digit";
      span.textContent = d.is_digit ? String(d.digit) : "?";
      span.tabIndex = 0;
      span.title = `${percent(d.confidence)} sure`;
      span.addEventListener("pointerenter", () => selectDigit(index));
      span.addEventListener("focus", () => selectDigit(index));
      span.addEventListener("click", () => selectDigit(index));
      return span;
    }),
  );
  const { width, height } = request.context.exported;
  ui.boxes.replaceChildren(
    ...digits.map(({ box: [x0, y0, x1, y1] }) => {
      const div = document.createElement("div");
      div.className = "box";
      div.style.left = `${(100 * x0) / width}%`;
      div.style.top = `${(100 * y0) / height}%`;
      div.style.width = `${(100 * (x1 - x0)) / width}%`;
      div.style.height = `${(100 * (y1 - y0)) / height}%`;
      return div;
    }),
  );
  shownDigits = digits;
  if (digits.length) {
    const least = Math.min(...digits.map((d) => d.confidence));
    const count = digits.length === 1 ? "1 digit" : `${digits.length} digits`;
    ui.confidence.textContent = `${count}, the least sure ${percent(least)}`;
    selectDigit(selected);
  } else {
    ui.confidence.textContent = "";
  }
  ui.model.textContent = answer.model || "unknown";
  ui.latency.textContent = `· answered in ${Math.round(performance.now() - request.sentAt)} ms`;
  ui.answer.dataset.requestId = String(request.id);
  shownVersion = request.context.version;
  answered = null; // feedback is for single digits
  updateFeedback();
  say("");
}

/** Show one digit of the number: its bars and image, its box and its place in the number. */
function selectDigit(index) {
  const digit = shownDigits?.[index];
  if (!digit) return;
  ui.bars.forEach((li, d) => setBar(li, digit.probabilities[d] ?? 0, d === digit.digit));
  if (digit.preview) {
    ui.preview.src = digit.preview;
    ui.preview.hidden = false;
  }
  [...ui.boxes.children].forEach((box, i) => box.classList.toggle("selected", i === index));
  [...ui.prediction.children].forEach((s, i) => s.classList.toggle("selected", i === index));
  ui.answer.dataset.selected = String(index);
}

/** Hovering the pad (not drawing) over a digit's box selects that digit. */
function hoverPad(e) {
  if (!shownDigits || pad.isDrawing || e.pointerType !== "mouse") return;
  const rect = ui.canvas.getBoundingClientRect();
  const x = (e.clientX - rect.left) / rect.width;
  const y = (e.clientY - rect.top) / rect.height;
  [...ui.boxes.children].forEach((box, index) => {
    const left = parseFloat(box.style.left) / 100;
    const top = parseFloat(box.style.top) / 100;
    const right = left + parseFloat(box.style.width) / 100;
    const bottom = top + parseFloat(box.style.height) / 100;
    if (x >= left && x <= right && y >= top && y <= bottom) selectDigit(index);
  });
}

function setMode(next) {
  if (next === mode) return;
  mode = next;
  document.body.dataset.mode = mode;
  ui.hint.textContent = HINT_TEXT[mode];
  client.discardPending();
  pad.setAspect(ASPECT[mode]);
  showNothing();
}

function showError(error, request) {
  if (request && request.context.mode !== mode) return;
  if (error.code === "empty" || error.code === "too_many_digits") clearAnswer();
  let text = ERROR_TEXT[error.code] ?? error.message ?? `Something went wrong (${error.code}).`;
  if (error.code === "empty" && mode === "number") text = "Draw a number first: the canvas is blank.";
  say(text);
  ui.message.dataset.code = error.code ?? "";
  if (RETRY_CODES.has(error.code)) {
    // The drawing still waits for its answer: ask again shortly.
    clearTimeout(retryTimer);
    retryTimer = setTimeout(refreshIfStale, RETRY_BUSY_MS);
  } else if (request) {
    shownVersion = request.context.version;
  }
}

function setBar(li, p, best) {
  li.style.setProperty("--p", String(p));
  li.classList.toggle("best", best);
  // Whole percents: a column is narrow on a phone.
  li.querySelector(".value").textContent = `${Math.round(p * 100)}%`;
}

function clearAnswer() {
  ui.prediction.textContent = "";
  ui.prediction.classList.remove("not-digit");
  ui.probabilities.classList.remove("not-digit");
  ui.boxes.replaceChildren();
  shownDigits = null;
  delete ui.answer.dataset.selected;
  ui.confidence.textContent = "";
  ui.bars.forEach((li) => setBar(li, 0, false));
  ui.preview.hidden = true;
  ui.preview.removeAttribute("src");
  ui.latency.textContent = "";
  delete ui.answer.dataset.requestId;
  answered = null;
  updateFeedback();
}

function showNothing() {
  clearTimeout(liveTimer);
  liveTimer = 0;
  askWhenConnected = false;
  shownVersion = pad.version;
  clearAnswer();
  say("");
  ui.answer.removeAttribute("aria-busy");
}

function say(text) {
  ui.message.textContent = text;
  if (!text) delete ui.message.dataset.code;
}

/** The feedback row shows with an answer; its buttons work when that answer describes the
 * drawing on the pad as it is now, no feedback is in flight, and none was saved for it. */
function updateFeedback() {
  ui.feedback.hidden = !answered;
  if (!answered) sayFeedback("");
  const current = answered !== null && answered.version === pad.version && !pad.isDrawing;
  const open = current && feedbackInFlight === null && savedVersion !== pad.version;
  for (const button of feedbackButtons) button.disabled = !open;
  // "Right" would confirm a digit; a drawing answered "not a digit" has none.
  ui.feedbackRight.hidden = answered !== null && answered.digit === null;
}

/** Say what the drawing really was ("Right" sends the digit the model read). */
function sendFeedback(digit) {
  if (ui.feedbackRight.disabled) return; // the buttons' rule holds for the keys too
  if (digit === null || digit === undefined) return; // "Right" on an answer with no digit
  const { drawing, version, digit: predicted, model } = answered;
  const id = client.feedback({ drawing, digit, predicted, model }, { version });
  if (id === null) {
    sayFeedback(FEEDBACK_TEXT.offline, "error");
    return;
  }
  feedbackInFlight = id;
  sayFeedback(FEEDBACK_TEXT.saving, "saving");
  updateFeedback();
}

function feedbackAnswered(message, request) {
  if (request.id === feedbackInFlight) feedbackInFlight = null;
  if (message?.type === "feedback_saved") {
    savedVersion = request.context.version;
    sayFeedback(FEEDBACK_TEXT[message.duplicate ? "duplicate" : "saved"], "saved");
    thanksTimer = setTimeout(() => sayFeedback(""), THANKS_MS);
  } else if (message) {
    sayFeedback(message.message || `Not saved (${message.code}).`, "error", message.code);
  } else {
    sayFeedback(FEEDBACK_TEXT.lost, "error");
  }
  updateFeedback();
}

function sayFeedback(text, outcome = "", code = "") {
  clearTimeout(thanksTimer);
  ui.feedbackStatus.textContent = text;
  ui.feedbackStatus.dataset.outcome = outcome;
  ui.feedbackStatus.dataset.code = code;
}

function connectionChanged(state, { retryInMs } = {}) {
  let text = CONNECTION_TEXT[state];
  if (state === STATE.RECONNECTING && retryInMs > 1_500) {
    text = `Reconnecting in ${Math.round(retryInMs / 1_000)} s…`;
  }
  ui.connection.dataset.state = state;
  ui.connectionText.textContent = text;
  document.documentElement.dataset.connection = state;
  if (state === STATE.CONNECTED) {
    if (ui.message.textContent.startsWith("Not connected")) say("");
    refreshIfStale();
  }
}

ui.predict.addEventListener("click", predictNow);
ui.canvas.addEventListener("pointermove", hoverPad);
for (const input of ui.modes) {
  input.addEventListener("change", () => input.checked && setMode(input.value));
}
ui.undo.addEventListener("click", () => pad.undo());
ui.reset.addEventListener("click", () => pad.clear());
ui.feedbackRight.addEventListener("click", () => sendFeedback(answered?.digit));
for (const button of ui.feedbackDigits) {
  button.addEventListener("click", () => sendFeedback(Number(button.dataset.digit)));
}

// Enter predicts, except on a control the person reached with the keyboard (Tab), where it
// keeps its usual meaning. A button clicked with the mouse keeps focus too, but Enter pressed
// later should predict, not press that button again: so remember how focus arrived.
let lastInput = "pointer";
let focusByKeyboard = false;
document.addEventListener("pointerdown", () => (lastInput = "pointer"), true);
document.addEventListener("keydown", () => (lastInput = "keyboard"), true);
document.addEventListener("focusin", () => (focusByKeyboard = lastInput === "keyboard"));

document.addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.isComposing || e.altKey) return;
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && !e.shiftKey && key === "z") {
    e.preventDefault();
    pad.undo();
  } else if (e.ctrlKey || e.metaKey) {
    // Leave the browser's own shortcuts alone.
  } else if (key === "enter") {
    const onControl = e.target instanceof Element && e.target.closest("button, a, input");
    if (onControl && focusByKeyboard) return;
    e.preventDefault();
    if (!e.repeat) predictNow();
  } else if (key === "escape") {
    pad.clear();
  } else if (/^[0-9]$/.test(e.key) && !isTextField(e.target)) {
    // A digit key says "it was this digit", as its button does. (No Shift check: some
    // keyboard layouts need Shift for digits.)
    e.preventDefault();
    if (!e.repeat) sendFeedback(Number(e.key));
  }
});

function isTextField(target) {
  return target instanceof Element && target.closest("input, textarea, select, [contenteditable]");
}

document.body.dataset.mode = mode;
for (const input of ui.modes) input.checked = input.value === mode; // a reload may keep a choice
clearAnswer();
padChanged("init");
client.connect();
