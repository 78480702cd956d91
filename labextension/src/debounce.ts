/**
 * Trailing-edge debouncing with a ceiling, so that a burst of notebook
 * changes (typing, streaming outputs) costs one call per pause, and a burst
 * that never pauses still gets one call every `maxWait` milliseconds.
 */
export class Debouncer {
  constructor(
    private readonly _fn: () => void,
    private readonly _wait: number,
    private readonly _maxWait: number = _wait * 4
  ) {}

  /** Call the function once things have been quiet for `wait` ms (or after `maxWait`). */
  schedule(): void {
    const now = Date.now();
    if (this._first === null) {
      this._first = now;
    }
    const delay = Math.min(this._wait, this._first + this._maxWait - now);
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => this.flush(), Math.max(delay, 0));
  }

  /** Call the function now if a call is scheduled. */
  flush(): void {
    if (this._timer === null) {
      return;
    }
    this.cancel();
    this._fn();
  }

  cancel(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = null;
    this._first = null;
  }

  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _first: number | null = null;
}
