// The drawing pad: pointer input in, strokes kept as data, pixels rendered from the data.
//
// Strokes are lists of points [x, y, t] in canvas-relative units (0..1 on both axes; t in ms
// since the drawing's first point), so the drawing survives resizes and device-pixel-ratio
// changes, Undo is "redraw all but the last stroke", and what is sent to the server (the
// strokes themselves, as ink) is the same whatever the screen.

/** Brush width as a fraction of the canvas's height (its side, when square). After the server
 * crops the ink and scales it to MNIST's 20-pixel box, a digit drawn across half the pad gets
 * MNIST's 2-3 pixel strokes. */
export const BRUSH = 0.065;

/** Points closer than this (canvas-relative) to the previous one add nothing but cost. */
const MIN_STEP = 0.002;

const INK = "#ffffff";
const PAPER = "#000000";

/** Paint the strokes on a context `width` by `height` device pixels (square unless `height` is
 * given): black paper, white ink, round caps and joins, and quadratic curves through the
 * midpoints between samples so fast strokes come out smooth instead of polygonal. */
export function renderStrokes(ctx, width, strokes, height = width) {
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, width, height);
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.lineWidth = BRUSH * height;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of strokes) {
    traceStroke(ctx, width, height, stroke);
  }
  ctx.restore();
}

function traceStroke(ctx, width, height, points) {
  const p = points.map(([x, y]) => [x * width, y * height]);
  if (p.length === 0) return;
  ctx.beginPath();
  if (p.length === 1) {
    // A tap is a dot, as wide as the brush.
    ctx.arc(p[0][0], p[0][1], (BRUSH * height) / 2, 0, Math.PI * 2);
    ctx.fill();
    return;
  }
  ctx.moveTo(p[0][0], p[0][1]);
  for (let i = 1; i < p.length - 1; i++) {
    const midX = (p[i][0] + p[i + 1][0]) / 2;
    const midY = (p[i][1] + p[i + 1][1]) / 2;
    ctx.quadraticCurveTo(p[i][0], p[i][1], midX, midY);
  }
  const last = p[p.length - 1];
  ctx.lineTo(last[0], last[1]);
  ctx.stroke();
}

/**
 * A canvas (square, or `aspect` times as wide as high) that records pointer strokes (mouse, touch and pen alike).
 *
 * `onChange(reason)` is called with "stroke-start" when a pointer goes down, "draw" while the
 * stroke grows, "stroke-end" when it is finished, and "undo" or "clear" after those actions.
 */
export class DrawingPad {
  constructor(canvas, { onChange = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onChange = onChange;
    this.strokes = [];
    /** The event time of the drawing's first point: ink times count from it. */
    this.startedAt = 0;
    /** Bumped on every change, so a shown answer can be matched to the drawing it describes. */
    this.version = 0;
    this.activePointer = null;
    this.frame = 0;
    this.exportCanvas = document.createElement("canvas");
    this.cssWidth = 0;
    this.watchedRatio = 0;
    /** Width over height: 1 for a digit, 2 for a number. */
    this.aspect = 1;

    canvas.addEventListener("pointerdown", (e) => this.#down(e));
    canvas.addEventListener("pointermove", (e) => this.#move(e));
    canvas.addEventListener("pointerup", (e) => this.#up(e));
    canvas.addEventListener("pointercancel", (e) => this.#up(e));
    canvas.addEventListener("lostpointercapture", (e) => this.#up(e));
    // A long press would otherwise open the context menu on touch screens.
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());

    // Keep the backing store at the canvas's size in device pixels, so lines stay sharp on
    // high-density screens and after zooming or rotating.
    new ResizeObserver(([entry]) => this.#resize(entry)).observe(canvas);
  }

  get isEmpty() {
    return this.strokes.length === 0;
  }

  get isDrawing() {
    return this.activePointer !== null;
  }

  undo() {
    if (this.isDrawing || this.isEmpty) return;
    this.strokes.pop();
    this.#changed("undo");
  }

  clear() {
    if (this.isDrawing) {
      // Forget the pointer first: releasing capture fires lostpointercapture, which must not
      // end (and send) the stroke being thrown away.
      const pointer = this.activePointer;
      this.activePointer = null;
      if (this.canvas.hasPointerCapture?.(pointer)) this.canvas.releasePointerCapture(pointer);
    }
    if (this.isEmpty) return;
    this.strokes = [];
    this.#changed("clear");
  }

  /** The drawing as ink: strokes of [x, y, t] points in whole pixels of a drawing area `size`
   * pixels high (and `aspect` times as wide), t in whole milliseconds since the first point. The
   * server normalises scale and place, so whole pixels of a modest area lose nothing it uses,
   * and keep a frame small. */
  toInk(size) {
    return this.strokes.map((stroke) =>
      stroke.map(([x, y, t]) => [
        Math.round(x * size * this.aspect),
        Math.round(y * size),
        Math.round(t),
      ]),
    );
  }

  /** The drawing as a PNG data URL, `size` pixels high (and `aspect` times as wide), white
   * ink on black. */
  toDataURL(size) {
    const out = this.exportCanvas;
    const width = Math.round(size * this.aspect);
    if (out.width !== width || out.height !== size) {
      out.width = width;
      out.height = size;
    }
    renderStrokes(out.getContext("2d"), width, this.strokes, size);
    return out.toDataURL("image/png");
  }

  /** Change the pad's shape (a new, blank drawing: strokes are kept in relative units). */
  setAspect(aspect) {
    if (aspect === this.aspect) return;
    this.clear();
    this.aspect = aspect;
    this.#fit(this.canvas.getBoundingClientRect().width);
  }

  #resize(entry) {
    // Not devicePixelContentBoxSize: under device emulation Chromium reports CSS pixels there.
    this.#fit(entry.contentRect.width);
  }

  /** Size the backing store to `cssWidth` times the device pixel ratio, and watch the ratio
   * (a window dragged to another screen, or zoom) to size it again. */
  #fit(cssWidth) {
    this.cssWidth = cssWidth;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(cssWidth * ratio);
    const height = Math.round(width / this.aspect);
    if (width > 0 && (this.canvas.width !== width || this.canvas.height !== height)) {
      this.canvas.width = width;
      this.canvas.height = height;
      this.render();
    }
    if (this.watchedRatio !== ratio) {
      this.watchedRatio = ratio;
      matchMedia(`(resolution: ${ratio}dppx)`).addEventListener(
        "change",
        () => this.#fit(this.cssWidth),
        { once: true },
      );
    }
  }

  render() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    renderStrokes(this.ctx, this.canvas.width, this.strokes, this.canvas.height);
  }

  /** Coalesce many pointer events into one repaint per display frame. */
  #scheduleRender() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  #point(e) {
    const rect = this.canvas.getBoundingClientRect();
    if (this.isEmpty) this.startedAt = e.timeStamp;
    return [
      (e.clientX - rect.left) / rect.width,
      (e.clientY - rect.top) / rect.height,
      Math.max(0, e.timeStamp - this.startedAt),
    ];
  }

  #down(e) {
    // One stroke at a time: a second finger or a right click does not draw.
    if (this.isDrawing || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    this.activePointer = e.pointerId;
    this.canvas.setPointerCapture?.(e.pointerId);
    this.strokes.push([this.#point(e)]);
    this.#changed("stroke-start");
  }

  #move(e) {
    if (e.pointerId !== this.activePointer) return;
    e.preventDefault();
    const stroke = this.strokes[this.strokes.length - 1];
    // Coalesced events carry the samples the browser merged into this one: smoother curves.
    const events = e.getCoalescedEvents?.() ?? [];
    let added = false;
    for (const sample of events.length ? events : [e]) {
      const point = this.#point(sample);
      const [lx, ly] = stroke[stroke.length - 1];
      if (Math.hypot(point[0] - lx, point[1] - ly) >= MIN_STEP) {
        stroke.push(point);
        added = true;
      }
    }
    if (added) this.#changed("draw");
  }

  #up(e) {
    if (e.pointerId !== this.activePointer) return;
    this.activePointer = null;
    this.#changed("stroke-end");
  }

  #changed(reason) {
    this.version += 1;
    this.#scheduleRender();
    this.onChange(reason);
  }
}
