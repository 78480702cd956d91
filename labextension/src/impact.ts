/**
 * What an edit of one cell would do to the others, by the kernel's own rule
 * (PROTOCOL.md, `stale`; incrcell/predict.py): a cell is stale when it
 * executed in this session and its source changed since, or a cell it
 * depends on is stale.  So an edit of a cell that executed makes stale every
 * executed cell reachable from it through executed cells, whatever their
 * state (`uncacheable` cells of `%%incrcell nocache`, `rerun` cells...); a
 * cell that never executed is not stale, and does not pass staleness on.
 *
 * The one function both the Cells tab and the graph use, so they always mark
 * the same cells.  Pure.
 */

import type { CacheModel } from './model';

/** The cells (other than `id`) an edit of `id` would make stale. */
export function staleAfterEdit(model: CacheModel, id: string): Set<string> {
  const executed = (cell: string) => {
    const state = model.state(cell)?.state;
    return state !== undefined && state !== 'not_run';
  };
  const found = new Set<string>();
  if (!executed(id)) {
    return found;
  }
  const readers = downstream(model);
  const queue = [id];
  while (queue.length) {
    for (const next of readers.get(queue.pop()!) ?? []) {
      if (next !== id && !found.has(next) && executed(next)) {
        found.add(next);
        queue.push(next);
      }
    }
  }
  return found;
}

/** Every cell `id` reads from, directly or through other cells. */
export function upstreamOf(model: CacheModel, id: string): Set<string> {
  const found = new Set<string>();
  const queue = [id];
  while (queue.length) {
    for (const dep of model.state(queue.pop()!)?.depends_on ?? []) {
      if (dep.id !== id && !found.has(dep.id) && model.indexOf(dep.id) !== -1) {
        found.add(dep.id);
        queue.push(dep.id);
      }
    }
  }
  return found;
}

/** For each cell, the notebook cells that read from it directly. */
function downstream(model: CacheModel): Map<string, string[]> {
  const readers = new Map<string, string[]>();
  for (const cell of model.cells) {
    for (const dep of model.state(cell.id)?.depends_on ?? []) {
      readers.set(dep.id, [...(readers.get(dep.id) ?? []), cell.id]);
    }
  }
  return readers;
}
