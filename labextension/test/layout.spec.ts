import { Edge } from '../src/model';
import {
  GraphLayout,
  layoutGraph,
  LABEL_HEIGHT,
  MAX_COLUMNS,
  NODE_RADIUS,
  ROW_HEIGHT
} from '../src/layout';

/** Every point an arc's path passes through (its commands' end and control points). */
function points(path: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let x = 0;
  let y = 0;
  for (const [, cmd, args] of path.matchAll(/([MHVQ])([^MHVQ]*)/g)) {
    const nums = args.trim().split(/[ ,]+/).map(Number);
    if (cmd === 'H') {
      x = nums[0];
    } else if (cmd === 'V') {
      y = nums[0];
    } else {
      x = nums[nums.length - 2];
      y = nums[nums.length - 1];
    }
    out.push([x, y]);
  }
  return out;
}

/** The straight segments of an arc (the rounded corners as straight cuts). */
function segments(path: string): Array<[[number, number], [number, number]]> {
  const p = points(path);
  return p.slice(1).map((q, i) => [p[i], q]);
}

function crossesNode(layout: GraphLayout, path: string, except: string[]): boolean {
  return layout.nodes
    .filter(n => !except.includes(n.id))
    .some(n =>
      segments(path).some(([[x1, y1], [x2, y2]]) => {
        // distance from the node's centre to the segment
        const dx = x2 - x1;
        const dy = y2 - y1;
        const t = Math.max(
          0,
          Math.min(1, ((n.x - x1) * dx + (n.y - y1) * dy) / (dx * dx + dy * dy || 1))
        );
        return Math.hypot(x1 + t * dx - n.x, y1 + t * dy - n.y) < NODE_RADIUS;
      })
    );
}

/** A 40-cell notebook as people write them: a loader, a chain, fan-outs and a report. */
function fortyCells(): { ids: string[]; edges: Edge[] } {
  const ids = Array.from({ length: 40 }, (_, i) => `c${i}`);
  const edges: Edge[] = [];
  for (let i = 1; i < 40; i++) {
    edges.push({ from: 'c0', to: ids[i], names: ['df'] });
    if (i % 3 === 0) {
      edges.push({ from: ids[i - 1], to: ids[i], names: [`feature_${i - 1}`, 'model'] });
    }
    if (i > 20 && i % 5 === 0) {
      edges.push({ from: ids[i - 10], to: ids[i], names: ['results', 'config', 'params'] });
    }
  }
  return { ids, edges };
}

describe('layoutGraph', () => {
  it('puts cells in notebook order, one row each, in layer 0 without edges', () => {
    const layout = layoutGraph(['a', 'b', 'c'], []);
    expect(layout.nodes.map(n => [n.id, n.y, n.layer])).toEqual([
      ['a', ROW_HEIGHT / 2, 0],
      ['b', ROW_HEIGHT * 1.5, 0],
      ['c', ROW_HEIGHT * 2.5, 0]
    ]);
    expect(layout.arcs).toEqual([]);
    expect(layout.height).toBe(3 * ROW_HEIGHT);
    expect(new Set(layout.nodes.map(n => n.x)).size).toBe(1);
  });

  it('puts each cell one layer right of its deepest upstream cell', () => {
    const layout = layoutGraph(
      ['a', 'b', 'c', 'd'],
      [
        { from: 'a', to: 'b', names: ['x'] },
        { from: 'b', to: 'c', names: ['y'] },
        { from: 'a', to: 'c', names: ['x'] },
        { from: 'a', to: 'd', names: ['x'] }
      ]
    );
    const node = (id: string) => layout.nodes.find(n => n.id === id)!;
    expect(['a', 'b', 'c', 'd'].map(id => node(id).layer)).toEqual([0, 1, 2, 1]);
    expect(node('a').x).toBeLessThan(node('b').x);
    expect(node('b').x).toBeLessThan(node('c').x);
    expect(node('d').x).toBe(node('b').x);
    expect(layout.textX).toBeGreaterThan(node('c').x);
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
    expect(arc).toMatchObject({ from: 'a', to: 'c', names: ['x'] });
    const p = points(arc.path);
    expect(p[0][1]).toBe(ROW_HEIGHT / 2);
    expect(p[p.length - 1][1]).toBe(ROW_HEIGHT * 2.5);
    // the label sits in the band right above the reader
    expect(arc.label).toMatchObject({ text: 'x', y: 2 * ROW_HEIGHT });
  });

  it('at 40 cells: no edge crosses a node, no two labels overlap, labels clear the rows', () => {
    const { ids, edges } = fortyCells();
    const layout = layoutGraph(ids, edges);
    expect(layout.arcs).toHaveLength(edges.length);
    for (const arc of layout.arcs) {
      expect(crossesNode(layout, arc.path, [arc.from, arc.to])).toBe(false);
    }
    const labels = layout.arcs.flatMap(a => (a.label ? [a.label] : []));
    expect(labels.length).toBeGreaterThan(edges.length / 2);
    for (const [i, a] of labels.entries()) {
      // between two rows' centres: clear of both rows' texts
      expect(a.y % ROW_HEIGHT).toBe(0);
      expect(ROW_HEIGHT / 2 - LABEL_HEIGHT / 2).toBeGreaterThanOrEqual(7);
      for (const b of labels.slice(i + 1)) {
        const apart = a.y !== b.y || a.x + a.width <= b.x || b.x + b.width <= a.x;
        expect(apart).toBe(true);
      }
    }
  });

  it('folds deep chains into a bounded number of columns', () => {
    const ids = Array.from({ length: 200 }, (_, i) => `c${i}`);
    const edges = ids.slice(1).flatMap((id, i) => [
      { from: ids[i], to: id, names: ['v'] },
      { from: ids[0], to: id, names: ['w'] }
    ]);
    const layout = layoutGraph(ids, edges);
    expect(layout.arcs).toHaveLength(edges.length);
    expect(new Set(layout.nodes.map(n => n.x)).size).toBe(MAX_COLUMNS);
    expect(layout.nodes[199].layer).toBe(199);
    expect(layout.textX).toBeLessThan(200);
    for (const arc of layout.arcs.slice(0, 40)) {
      expect(crossesNode(layout, arc.path, [arc.from, arc.to])).toBe(false);
    }
  });
});
