/**
 * Geometry of the dependency graph: a layered layout that stays readable at
 * 40+ cells in a narrow sidebar.  Pure: the unit tests check it without a DOM.
 *
 * - **Rows** keep notebook order, one cell per row, so the graph reads like
 *   the Cells tab and every node label has a line of its own.
 * - **Columns** are dependency layers: a cell with no upstream cell is in
 *   layer 0, any other one layer right of its deepest upstream cell.  Deep
 *   chains are folded into the last of `MAX_COLUMNS` columns, so the labels
 *   keep their room.
 * - **Edges** leave a cell to the right, run down a lane in the gap right of
 *   its column, and enter the reader from the side.  Nodes sit only on column
 *   centres and one per row, so an edge never crosses a node; one lane per
 *   upstream cell (its readers share it, like a bus), and upstream cells
 *   whose spans overlap get different lanes.
 * - **Edge labels** (the names an edge carries) go in the free band between
 *   two rows' texts, next to the edge's lane: the band just above the reader
 *   first, then the others along the edge; a band already holding a label
 *   at that x is skipped, so labels never overlap.  A label with no free slot
 *   is left out (its names stay in the edge's tooltip).
 */

import type { Edge } from './model';

export const ROW_HEIGHT = 28;
/** The radius of a node's dot; edges stop at its rim so their arrowheads show. */
export const NODE_RADIUS = 5;
/** Estimated width of one character of an edge label (10px monospace), to keep labels apart. */
export const LABEL_CHAR_WIDTH = 6.2;
/** The height of the band between two rows' texts where edge labels go. */
export const LABEL_HEIGHT = 11;
export const MAX_COLUMNS = 8;
const MARGIN = 8;
const COLUMN_GAP = 12;
const LANE_GAP = 4;
const MAX_LANES = 6;
const TEXT_GAP = 10;
const LABEL_MAX = 24;

export interface NodeBox {
  id: string;
  x: number;
  y: number;
  /** Its dependency layer (0: reads from no other cell), before folding into columns. */
  layer: number;
}

export interface Arc extends Edge {
  /** SVG path data, from `from` to `to`. */
  path: string;
  /** The label's text (the names, shortened), and where it starts; null if it had no room. */
  label: { text: string; x: number; y: number; width: number } | null;
}

export interface GraphLayout {
  nodes: NodeBox[];
  arcs: Arc[];
  /** The x where node labels start. */
  textX: number;
  height: number;
}

export function layoutGraph(order: readonly string[], edges: readonly Edge[]): GraphLayout {
  const row = new Map(order.map((id, i) => [id, i]));
  // Only edges that point down the notebook: the kernel's depends_on always does.
  const kept = edges.filter(
    e => row.has(e.from) && row.has(e.to) && row.get(e.from)! < row.get(e.to)!
  );

  const layer = new Map<string, number>();
  const upstream = new Map<string, string[]>();
  for (const e of kept) {
    upstream.set(e.to, [...(upstream.get(e.to) ?? []), e.from]);
  }
  for (const id of order) {
    const parents = upstream.get(id) ?? [];
    layer.set(id, parents.length ? 1 + Math.max(...parents.map(p => layer.get(p)!)) : 0);
  }
  const column = (id: string) => Math.min(layer.get(id)!, MAX_COLUMNS - 1);

  // One lane per upstream cell, spanning its row to its last reader's, in the gap right of its column.
  const spans = new Map<string, { top: number; bottom: number; column: number; lane: number }>();
  for (const e of kept) {
    const span = spans.get(e.from);
    const bottom = row.get(e.to)!;
    if (span) {
      span.bottom = Math.max(span.bottom, bottom);
    } else {
      spans.set(e.from, { top: row.get(e.from)!, bottom, column: column(e.from), lane: 0 });
    }
  }
  const lanesOf: Array<Array<Array<[number, number]>>> = [];
  const byLength = [...spans.values()].sort(
    (p, q) => p.bottom - p.top - (q.bottom - q.top) || p.top - q.top
  );
  for (const span of byLength) {
    const lanes = (lanesOf[span.column] ??= []);
    let lane = lanes.findIndex(used => used.every(([t, b]) => b < span.top || span.bottom < t));
    if (lane === -1) {
      lane = lanes.length < MAX_LANES ? lanes.push([]) - 1 : MAX_LANES - 1;
    }
    lanes[lane].push([span.top, span.bottom]);
    span.lane = lane;
  }

  const columns = order.length ? Math.max(...order.map(column)) + 1 : 0;
  const columnX: number[] = [];
  let x = MARGIN + NODE_RADIUS;
  for (let c = 0; c < columns; c++) {
    columnX.push(x);
    x += COLUMN_GAP + (lanesOf[c]?.length ?? 0) * LANE_GAP;
  }
  const textX = columns ? x - COLUMN_GAP + TEXT_GAP : MARGIN;
  const y = (i: number) => i * ROW_HEIGHT + ROW_HEIGHT / 2;
  const laneX = (span: { column: number; lane: number }) =>
    columnX[span.column] + NODE_RADIUS + 3 + span.lane * LANE_GAP;

  // Edge labels: the bands between rows, each a list of the x ranges taken.
  const bands = new Map<number, Array<[number, number]>>();
  const place = (text: string, atX: number, candidates: number[]) => {
    const width = text.length * LABEL_CHAR_WIDTH;
    for (const band of candidates) {
      const taken = bands.get(band) ?? [];
      if (taken.every(([a, b]) => b + 2 <= atX || atX + width + 2 <= a)) {
        taken.push([atX, atX + width]);
        bands.set(band, taken);
        return { text, x: atX, y: band * ROW_HEIGHT, width };
      }
    }
    return null;
  };

  const arcs = kept
    .map(e => ({ e, from: row.get(e.from)!, to: row.get(e.to)! }))
    .sort((p, q) => p.to - q.to || p.from - q.from)
    .map(({ e, from, to }) => {
      const span = spans.get(e.from)!;
      const lx = laneX(span);
      const childX = columnX[column(e.to)];
      const path = route(columnX[span.column], lx, childX, y(from), y(to));
      // Bands between rows from..to: band k is the line between row k-1 and row k.
      const candidates = [to];
      for (let band = from + 1; band < to; band++) {
        candidates.push(band);
      }
      const names = e.names.join(', ');
      const text = names.length > LABEL_MAX ? names.slice(0, LABEL_MAX - 1) + '…' : names;
      return { ...e, path, label: text ? place(text, lx + 2, candidates) : null };
    });

  return {
    nodes: order.map((id, i) => ({ id, x: columnX[column(id)], y: y(i), layer: layer.get(id)! })),
    arcs,
    textX,
    height: order.length * ROW_HEIGHT
  };
}

/**
 * From the upstream node's rim right to its lane, down the lane, and into the
 * reader from the side it is on (rounded corners).
 */
function route(fromX: number, laneX: number, toX: number, y1: number, y2: number): string {
  const r = Math.min(5, (y2 - y1) / 2);
  const start = fromX + NODE_RADIUS + 1;
  const into = toX >= laneX ? 1 : -1; // the reader is right of the lane, or in the same column
  const end = toX - into * (NODE_RADIUS + 1);
  return (
    `M${start},${y1} H${laneX - r} Q${laneX},${y1} ${laneX},${y1 + r} ` +
    `V${y2 - r} Q${laneX},${y2} ${laneX + into * r},${y2} H${end}`
  );
}
