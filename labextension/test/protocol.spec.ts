import {
  cellsMessage,
  clearMessage,
  enableMessage,
  invalidateMessage,
  parseAck,
  parseKernelMessage
} from '../src/protocol';
import { cell, CELLS, stateMessage } from './fixtures';

describe('messages the frontend sends', () => {
  it('carry the protocol version and the documented fields', () => {
    expect(cellsMessage(CELLS)).toEqual({ type: 'cells', protocol: 1, cells: CELLS });
    expect(invalidateMessage('b')).toEqual({ type: 'invalidate', protocol: 1, id: 'b' });
    expect(clearMessage()).toEqual({ type: 'clear', protocol: 1 });
    expect(enableMessage(false)).toEqual({ type: 'enable', protocol: 1, enabled: false });
  });

  it('send only ids and sources of cells', () => {
    const extra = [{ id: 'a', source: 'x = 1', executionCount: 3 } as any];
    expect(cellsMessage(extra).cells).toEqual([{ id: 'a', source: 'x = 1' }]);
  });
});

describe('parseKernelMessage', () => {
  it('accepts hello, running and error', () => {
    expect(parseKernelMessage({ type: 'hello', protocol: 1, version: '0.1.0' })).toEqual({
      message: { type: 'hello', version: '0.1.0' }
    });
    expect(parseKernelMessage({ type: 'running', protocol: 1, id: 'c' })).toEqual({
      message: { type: 'running', id: 'c' }
    });
    expect(parseKernelMessage({ type: 'error', protocol: 1, message: 'disk full' })).toEqual({
      message: { type: 'error', message: 'disk full' }
    });
  });

  it('accepts a state message as sent', () => {
    const parsed = parseKernelMessage(stateMessage());
    expect('message' in parsed).toBe(true);
    const message = (parsed as any).message;
    expect(message.cells.map((c: any) => c.state)).toEqual([
      'restored',
      'ran',
      'stale',
      'uncacheable'
    ]);
    expect(message.cells[1].depends_on).toEqual([{ id: 'a', names: ['x'] }]);
    expect(message.totals.cache_entries).toBe(2);
    expect(message.stale).toEqual(['c']);
    expect(message.remote).toBeNull(); // no team cache, or a kernel that does not say
    expect(message.cells.map((c: any) => c.origin)).toEqual([null, null, null, null]);
  });

  it('reads where restores came from and the team cache', () => {
    const sent = stateMessage();
    const cells = sent.cells as Record<string, unknown>[];
    cells[0] = { ...cells[0], origin: 'remote' };
    cells[1] = { ...cells[1], origin: 'elsewhere' };
    const remote = { url: 's3://team/main', mode: 'read', available: true, error: null };
    const message = (
      parseKernelMessage({ ...sent, cells, remote: { ...remote, pending: 2 } }) as any
    ).message;
    expect(message.cells[0].origin).toBe('remote');
    expect(message.cells[1].origin).toBeNull(); // an origin it does not know
    expect(message.remote).toEqual({
      ...remote,
      fetched: 0,
      refused: 0,
      uploaded: 0,
      pending: 2,
      dropped: 0
    });
  });

  it('ignores other protocol versions and unknown types', () => {
    expect(parseKernelMessage({ type: 'hello', protocol: 2, version: '9' })).toEqual({
      ignored: 'protocol 2, expected 1'
    });
    expect(parseKernelMessage({ type: 'hello', version: '9' })).toHaveProperty('ignored');
    expect(parseKernelMessage({ type: 'gossip', protocol: 1 })).toEqual({
      ignored: 'unknown message type "gossip"'
    });
    expect(parseKernelMessage('state')).toEqual({ ignored: 'not a JSON object' });
    expect(parseKernelMessage(null)).toHaveProperty('ignored');
  });

  it('rejects messages without the fields a view needs', () => {
    expect(parseKernelMessage({ type: 'running', protocol: 1 })).toHaveProperty('ignored');
    expect(parseKernelMessage(stateMessage({ cells: 'all' }))).toHaveProperty('ignored');
    const unknownState = stateMessage({ cells: [cell('a', { state: 'cached' as any })] });
    expect((parseKernelMessage(unknownState) as any).ignored).toMatch(
      /unknown cell state "cached"/
    );
    const noId = stateMessage({ cells: [{ ...cell('a'), id: 7 }] });
    expect(parseKernelMessage(noId)).toHaveProperty('ignored');
  });

  it('fills neutral defaults for missing descriptive fields', () => {
    const parsed = parseKernelMessage({
      type: 'state',
      protocol: 1,
      cells: [{ id: 'a', state: 'ran', prediction: 'maybe' }]
    }) as any;
    expect(parsed.message).toEqual({
      type: 'state',
      enabled: true,
      cells: [cell('a', { label: '', state: 'ran' })],
      totals: {
        restored: 0,
        ran: 0,
        uncacheable: 0,
        error: 0,
        saved: 0,
        cache_bytes: 0,
        cache_cap: 0,
        cache_entries: 0,
        own: 0
      },
      stale: [],
      remote: null
    });
  });
});

describe('acknowledgements', () => {
  it('are read from states and errors, with what a clear removed', () => {
    expect(parseAck({ ...stateMessage(), ack: 4, cleared: { entries: 3, bytes: 1024 } })).toEqual({
      seq: 4,
      error: null,
      cleared: { entries: 3, bytes: 1024 }
    });
    expect(parseAck({ protocol: 1, type: 'error', message: 'no', ack: 5 })).toEqual({
      seq: 5,
      error: 'no',
      cleared: null
    });
  });

  it('are absent from messages without one, or of another protocol', () => {
    expect(parseAck(stateMessage())).toBeNull();
    expect(parseAck({ ...stateMessage(), ack: '4' })).toBeNull();
    expect(parseAck({ ...stateMessage(), protocol: 2, ack: 4 })).toBeNull();
  });
});
