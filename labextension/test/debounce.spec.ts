import { Debouncer } from '../src/debounce';

describe('Debouncer', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('calls once after a quiet period', () => {
    const fn = jest.fn();
    const debouncer = new Debouncer(fn, 300);
    debouncer.schedule();
    jest.advanceTimersByTime(200);
    debouncer.schedule();
    jest.advanceTimersByTime(200);
    expect(fn).not.toHaveBeenCalled();
    jest.advanceTimersByTime(100);
    expect(fn).toHaveBeenCalledTimes(1);
  });

  it('still calls every maxWait during a burst that never pauses', () => {
    const fn = jest.fn();
    const debouncer = new Debouncer(fn, 300, 1000);
    for (let t = 0; t < 2100; t += 100) {
      debouncer.schedule();
      jest.advanceTimersByTime(100);
    }
    expect(fn).toHaveBeenCalledTimes(2);
  });

  it('flushes now, and cancels', () => {
    const fn = jest.fn();
    const debouncer = new Debouncer(fn, 300);
    debouncer.flush();
    expect(fn).not.toHaveBeenCalled();
    debouncer.schedule();
    debouncer.flush();
    expect(fn).toHaveBeenCalledTimes(1);
    debouncer.schedule();
    debouncer.cancel();
    jest.advanceTimersByTime(1000);
    expect(fn).toHaveBeenCalledTimes(1);
  });
});
