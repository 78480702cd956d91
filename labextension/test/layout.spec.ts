import { layoutGraph, ROW_HEIGHT } from '../src/layout';

describe('layoutGraph', () => {
  it('puts cells in notebook order, one row each', () => {
    const layout = layoutGraph(['a', 'b', 'c'], []);
    expect(layout.nodes.map(n => [n.id, n.y])).toEqual([
      ['a', ROW_HEIGHT / 2],
      ['b', ROW_HEIGHT * 1.5],
      ['c', ROW_HEIGHT * 2.5]
    ]);
    expect(layout.arcs).toEqual([]);
    expect(layout.height).toBe(3 * ROW_HEIGHT);
    expect(new Set(layout.nodes.map(n => n.x)).size).toBe(1);
  });

  it('draws an arc per edge between cells present, from `from` to `to`', () => {
    const layout = layoutGraph(
      ['a', 'b', 'c'],
      [
        { from: 'a', to: 'c', names: ['x'] },
        { from: 'a', to: 'gone', names: ['y'] },
        { from: 'b', to: 'b', names: ['self'] }
      ]
    );
    expect(layout.arcs).toHaveLength(1);
    const [arc] = layout.arcs;
    expect(arc).toMatchObject({ from: 'a', to: 'c', names: ['x'], labelY: ROW_HEIGHT });
    expect(arc.path.startsWith('M')).toBe(true);
    expect(arc.path).toContain(`,${ROW_HEIGHT / 2} `);
    expect(arc.path).toContain(`,${ROW_HEIGHT * 2.5} H`);
    expect(arc.labelX).toBeLessThan(layout.nodes[0].x);
  });

  it('never puts overlapping spans in the same lane; disjoint spans share one', () => {
    const layout = layoutGraph(
      ['a', 'b', 'c', 'd', 'e'],
      [
        { from: 'a', to: 'b', names: [] },
        { from: 'b', to: 'c', names: [] },
        { from: 'a', to: 'c', names: [] },
        { from: 'a', to: 'e', names: [] },
        { from: 'c', to: 'd', names: [] }
      ]
    );
    const lane = (from: string, to: string) =>
      layout.arcs.find(a => a.from === from && a.to === to)!.labelX;
    expect(lane('a', 'b')).toBe(lane('b', 'c'));
    expect(lane('a', 'b')).toBe(lane('c', 'd'));
    expect(lane('a', 'c')).toBeLessThan(lane('a', 'b'));
    expect(lane('a', 'e')).toBeLessThan(lane('a', 'c'));
  });

  it('keeps the gutter bounded and is quick for 200 cells', () => {
    const ids = Array.from({ length: 200 }, (_, i) => `c${i}`);
    const edges = ids.slice(1).flatMap((id, i) => [
      { from: ids[i], to: id, names: ['v'] },
      { from: ids[0], to: id, names: ['w'] }
    ]);
    const start = Date.now();
    const layout = layoutGraph(ids, edges);
    expect(Date.now() - start).toBeLessThan(500);
    expect(layout.arcs).toHaveLength(edges.length);
    expect(layout.textX).toBeLessThan(200);
    expect(Math.min(...layout.arcs.map(a => a.labelX))).toBeGreaterThan(0);
  });
});
