// Every Slack message of the notifier and the bot, rendered from plain facts: the live message, milestone
// replies, validation tables, approval requests and decisions, status answers, usage. Pure; user data is
// escaped for mrkdwn and everything stays within Slack's block limits.
import { formatBytes, formatCount, formatDuration } from './format';
import { isWithinLagTarget, type LagTarget } from './slack-lag-alert';
import type { ApprovalRecord, SlackBlock, SlackButton, SlackMessage } from './slack-ports';
import type { Milestone, ProgressState } from './slack-progress';
import type { ValidationReport } from './validation';

/** Slack refuses a section text longer than 3,000 characters. */
const SECTION_MAX_CHARS = 2900;
/** Rows of a validation table shown in Slack; the rest is summarised (the full report is in the CLI). */
const TABLE_MAX_ROWS = 40;

/** mrkdwn treats &, < and > as control characters; user data must have them escaped. */
export function escapeSlack(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Text inside a ``` block: escaped, and no ``` that would end the block early. */
function escapePre(text: string): string {
  return escapeSlack(text).replace(/```/g, '`\u200b``');
}

export const formatClock = (ms: number) => `${new Date(ms).toISOString().slice(11, 19)} UTC`;
const mention = (userId: string) => `<@${userId.replace(/[^A-Z0-9]/gi, '')}>`;
const mrkdwn = (text: string) => ({ type: 'mrkdwn' as const, text });
const plain = (text: string) => ({ type: 'plain_text' as const, text: text.slice(0, 150) });
const section = (text: string): SlackBlock => ({
  type: 'section',
  text: mrkdwn(text.slice(0, SECTION_MAX_CHARS)),
});
const context = (text: string): SlackBlock => ({ type: 'context', elements: [mrkdwn(text.slice(0, 2000))] });

export function formatLagTarget(target: LagTarget): string {
  return 'bytes' in target ? formatBytes(target.bytes) : formatDuration(target.seconds * 1000);
}

const PHASE_TEXT: Record<ProgressState['phase'], string> = {
  starting: ':hourglass_flowing_sand: starting',
  snapshot: ':camera: snapshot',
  copy: ':package: copying',
  copied: ':package: copy finished, replay next',
  replay: ':arrows_counterclockwise: live replay',
  cutover: ':scissors: cutting over',
  done: ':checkered_flag: done',
  failed: ':x: stopped with an error',
};

/** The one live message of a migration, edited as it progresses. */
export function renderProgressMessage(
  s: ProgressState,
  options: { runUrl?: string | null } = {},
): SlackMessage {
  const fields: string[] = [`*Phase*\n${PHASE_TEXT[s.phase]}`];
  if (s.copy) {
    fields.push(
      `*Tables*\n${formatCount(s.copy.tablesDone)} / ${formatCount(s.copy.tables)} (parts ${formatCount(s.copy.partsDone)} / ${formatCount(s.copy.parts)})`,
      `*Rows copied*\n${formatCount(s.copy.rows)} (${formatBytes(s.copy.bytes)})`,
    );
  }
  if (s.lag) {
    const l = s.lag;
    fields.push(
      `*Lag*\n${formatBytes(l.lagBytes)} / ${l.lagSeconds.toFixed(1)} s${l.caughtUp ? ' (caught up)' : ''}`,
      `*Source WAL rate*\n${formatBytes(l.sourceWalRate)}/s`,
      `*Replay rate*\n${formatBytes(l.replayRate)}/s`,
      `*ETA*\n${l.caughtUp ? 'caught up' : l.etaSeconds === null ? 'not catching up' : formatDuration(l.etaSeconds * 1000)}`,
    );
    if (s.lagTarget) {
      fields.push(
        `*Lag target ${formatLagTarget(s.lagTarget)}*\n${isWithinLagTarget(l, s.lagTarget) ? ':white_check_mark: within' : ':warning: above'}`,
      );
    }
  }
  if (s.cutover?.seconds != null) fields.push(`*Cutover*\n${formatDuration(s.cutover.seconds * 1000)}`);
  const blocks: SlackBlock[] = [
    { type: 'header', text: plain(`pg-live-migrate · ${s.migrationId}`) },
    { type: 'section', fields: fields.slice(0, 10).map((f) => mrkdwn(f)) },
  ];
  if (s.error) blocks.push(section(`:x: *${s.error.code}*: ${escapeSlack(s.error.message)}`));
  blocks.push(
    context(
      `Updated ${formatClock(s.updatedAtMs)}${options.runUrl ? ` · <${options.runUrl}|workflow run>` : ''} · milestones in the thread`,
    ),
  );
  const lagText = s.lag ? `, lag ${formatBytes(s.lag.lagBytes)} (${s.lag.lagSeconds.toFixed(1)} s)` : '';
  return {
    text: `Migration ${s.migrationId}: ${PHASE_TEXT[s.phase].replace(/^:[a-z_]+: /, '')}${lagText}`,
    blocks,
  };
}

/** A thread reply for one milestone. */
export function renderMilestone(m: Milestone): SlackMessage {
  switch (m.kind) {
    case 'copy-started':
      return one(
        m.partsBefore > 0
          ? `:package: Copy resumed: ${formatCount(m.partsBefore)} of ${formatCount(m.parts)} parts were already on the target (${formatCount(m.tables)} tables, ~${formatBytes(m.estBytes)}).`
          : `:package: Copy started: ${formatCount(m.tables)} tables in ${formatCount(m.parts)} parts, ~${formatBytes(m.estBytes)}.`,
      );
    case 'copy-finished':
      return one(
        `:white_check_mark: Copy finished: ${formatCount(m.rows)} rows, ${formatBytes(m.bytes)} in ${formatDuration(m.seconds * 1000)}.`,
      );
    case 'caught-up':
      return one(
        `:large_green_circle: Target caught up with the source (lag ${formatBytes(m.lagBytes)}) after ${formatDuration(m.replaySeconds * 1000)} of replay.`,
      );
    case 'lag-breached':
      return one(
        `:warning: Lag above the target of ${formatLagTarget(m.target)}: ${formatBytes(m.lag.lagBytes)} / ${m.lag.lagSeconds.toFixed(1)} s (source WAL ${formatBytes(m.lag.sourceWalRate)}/s, replay ${formatBytes(m.lag.replayRate)}/s).`,
      );
    case 'lag-recovered':
      return one(
        `:large_green_circle: Lag back within the target of ${formatLagTarget(m.target)}: ${formatBytes(m.lag.lagBytes)} / ${m.lag.lagSeconds.toFixed(1)} s, after ${formatDuration(m.breachSeconds * 1000)} above it.`,
      );
    case 'cutover-requested':
      return one(`:scissors: Cutover started: draining${m.detail ? ` (${escapeSlack(m.detail)})` : ''}.`);
    case 'cutover-done': {
      const steps = m.steps
        .map((s) => `${s.step}${s.seconds !== null ? ` +${s.seconds.toFixed(1)}s` : ''}`)
        .join(', ');
      return one(
        `:checkered_flag: Cutover done in ${formatDuration(m.seconds * 1000)} at ${escapeSlack(m.endLsn)}${steps ? ` (${escapeSlack(steps)})` : ''}. Point the application at the target.`,
      );
    }
    case 'validation':
      return renderValidationReport(m.report);
    case 'error':
      return {
        text: `Error ${m.code}: ${m.message}`,
        blocks: [
          section(`:x: *${escapeSlack(m.code)}*\n*What happened:* ${escapeSlack(m.message)}`),
          section(`*Fix:* ${escapeSlack(m.hint)}`),
        ],
      };
  }
}

function one(text: string): SlackMessage {
  return { text: text.replace(/:[a-z_]+: /, ''), blocks: [section(text)] };
}

/** A title and preformatted text, cut into sections Slack accepts (at most 10). */
export function renderPreformatted(title: string, text: string): SlackMessage {
  const lines = text.split('\n');
  const chunks: string[] = [];
  let current = '';
  for (const line of lines) {
    const safe = escapePre(line.length > 500 ? `${line.slice(0, 500)}…` : line);
    if (current.length + safe.length + 1 > SECTION_MAX_CHARS - 10) {
      chunks.push(current);
      current = '';
    }
    current += `${current ? '\n' : ''}${safe}`;
  }
  if (current) chunks.push(current);
  const kept = chunks.slice(0, 9);
  const blocks: SlackBlock[] = [section(title), ...kept.map((c) => section(`\`\`\`${c}\`\`\``))];
  if (kept.length < chunks.length)
    blocks.push(context('The report is longer; run validate --json for all of it.'));
  return { text: title.replace(/[*:]|[a-z_]+:/g, '').trim(), blocks };
}

/** The validation report as a table (differing tables first), for the thread. */
export function renderValidationReport(report: ValidationReport): SlackMessage {
  const ordered = [...report.tables].sort((a, b) => Number(a.ok) - Number(b.ok));
  const shown = ordered.slice(0, TABLE_MAX_ROWS);
  const rows = shown.map((t) => [
    t.table,
    formatCount(t.sourceRows),
    t.targetRows === null ? 'missing' : formatCount(t.targetRows),
    t.checksumMatch === null ? '-' : t.checksumMatch ? 'match' : 'DIFFERS',
    t.ok ? 'ok' : 'MISMATCH',
  ]);
  const header = ['table', 'source rows', 'target rows', 'checksum', ''];
  const cut = (s: string) => (s.length > 40 ? `${s.slice(0, 39)}…` : s);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => cut(r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? cut(c).padEnd(widths[i] ?? 0) : cut(c).padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const differing = report.tables.filter((t) => !t.ok).length;
  const lines = [line(header), ...rows.map(line)];
  if (ordered.length > shown.length)
    lines.push(`… ${formatCount(ordered.length - shown.length)} more tables`);
  for (const t of report.tables.filter((x) => !x.ok).slice(0, 10)) {
    if (t.problem) lines.push(`${cut(t.table)}: ${t.problem}`);
    for (const key of (t.firstDifferingKeys ?? []).slice(0, 3))
      lines.push(`${cut(t.table)}: key ${cut(key)} differs`);
  }
  const mode =
    report.sourceMode === 'aligned'
      ? 'source read where the replay paused'
      : report.sourceMode === 'snapshot'
        ? "source read in the migration's snapshot"
        : 'source read live';
  const title = report.ok
    ? `:white_check_mark: *Validation passed*: ${report.tables.length} of ${report.tables.length} tables match (${report.checksum ? 'row counts and checksums' : 'row counts only'}; ${mode}).`
    : `:x: *Validation failed*: ${differing} of ${report.tables.length} tables differ (${report.checksum ? 'row counts and checksums' : 'row counts only'}; ${mode}).`;
  const message = renderPreformatted(title, lines.join('\n'));
  for (const warning of report.warnings.slice(0, 3))
    message.blocks?.push(context(`:warning: ${escapeSlack(warning)}`));
  return message;
}

/** Facts shown with an approval request: is it a good moment to cut over? */
export interface ReadinessFacts {
  phase: string;
  replayRunning: boolean;
  lagBytes: number | null;
  lagSeconds: number | null;
  caughtUp: boolean;
  lastValidation: { ok: boolean; tables: number; differing: number; checksum: boolean; atMs: number } | null;
  runUrl: string | null;
}

function readinessLines(f: ReadinessFacts): string[] {
  return [
    `*Phase:* ${escapeSlack(f.phase)} · *replay:* ${f.replayRunning ? 'running' : ':warning: not running'}`,
    `*Lag now:* ${f.lagBytes === null ? 'unknown' : `${formatBytes(f.lagBytes)} / ${(f.lagSeconds ?? 0).toFixed(1)} s`} · *caught up:* ${f.caughtUp ? 'yes' : ':warning: no'}`,
    `*Last validation:* ${
      f.lastValidation
        ? `${f.lastValidation.ok ? 'passed' : ':x: failed'} (${f.lastValidation.tables - f.lastValidation.differing}/${f.lastValidation.tables} tables match, ${f.lastValidation.checksum ? 'checksums' : 'row counts'}) at ${formatClock(f.lastValidation.atMs)}`
        : 'none yet (`/migrate validate`)'
    }`,
  ];
}

export const ActionId = {
  approve: 'plm_cutover_approve',
  reject: 'plm_cutover_reject',
  clean: 'plm_clean_confirm',
} as const;

/** The approval request in the migration's thread, with its buttons while undecided. */
export function renderApprovalRequest(
  record: ApprovalRecord,
  facts: ReadinessFacts,
  value: string,
  options: { buttons: boolean } = { buttons: true },
): SlackMessage {
  const head = `:scissors: *Cutover of \`${escapeSlack(record.migrationId)}\` requested* by ${mention(record.requestedBy)} at ${formatClock(record.requestedAtMs)}${record.checksum ? ' (validation with checksums)' : ''}.`;
  const blocks: SlackBlock[] = [section(`${head}\n${readinessLines(facts).join('\n')}`)];
  if (facts.runUrl) blocks.push(context(`<${facts.runUrl}|workflow run>`));
  if (record.decision) {
    const d = record.decision;
    blocks.push(
      section(
        d.verdict === 'approved'
          ? `:white_check_mark: *Approved* by ${mention(d.by)} at ${formatClock(d.atMs)}.`
          : `:no_entry: *Rejected* by ${mention(d.by)} at ${formatClock(d.atMs)}.`,
      ),
    );
  } else if (!options.buttons) {
    blocks.push(context('Preparing the approval buttons …'));
  } else {
    const buttons: SlackButton[] = [
      {
        type: 'button',
        action_id: ActionId.approve,
        text: plain('Approve cutover'),
        value,
        style: 'primary',
      },
      { type: 'button', action_id: ActionId.reject, text: plain('Reject'), value, style: 'danger' },
    ];
    blocks.push(context('Only an allowed approver other than the requester can approve.'), {
      type: 'actions',
      block_id: 'plm_approval',
      elements: buttons,
    });
  }
  const state = record.decision ? ` (${record.decision.verdict})` : ' (waiting for approval)';
  return { text: `Cutover of ${record.migrationId} requested${state}`, blocks };
}

/** Facts for `/migrate status`. */
export interface StatusFacts extends ReadinessFacts {
  migrationId: string;
  exists: boolean;
  tables: { done: number; total: number };
  rowsCopied: number;
  etaSeconds: number | null;
  sourceWalRate: number | null;
  replayRate: number | null;
  slot: string;
  error: { code: string; message: string; hint: string } | null;
  milestones: { atMs: number; text: string }[];
}

export function renderStatus(f: StatusFacts): SlackMessage {
  if (!f.exists) {
    return one(
      `:grey_question: Migration \`${escapeSlack(f.migrationId)}\` has nothing recorded on the target yet (run preflight, then migrate).`,
    );
  }
  const lines = [
    `*Migration \`${escapeSlack(f.migrationId)}\`*`,
    ...readinessLines(f),
    `*Copy:* ${formatCount(f.tables.done)}/${formatCount(f.tables.total)} tables, ${formatCount(f.rowsCopied)} rows · *slot:* ${escapeSlack(f.slot)}`,
    `*Rates:* source WAL ${formatBytes(f.sourceWalRate ?? 0)}/s, replay ${formatBytes(f.replayRate ?? 0)}/s · *ETA:* ${f.caughtUp ? 'caught up' : f.etaSeconds === null ? 'not catching up' : formatDuration(f.etaSeconds * 1000)}`,
  ];
  if (f.error) lines.push(`:x: *${escapeSlack(f.error.code)}*: ${escapeSlack(f.error.message)}`);
  const blocks: SlackBlock[] = [section(lines.join('\n'))];
  if (f.milestones.length)
    blocks.push(
      section(
        `*Last milestones*\n${f.milestones
          .slice(-5)
          .map((m) => `• ${formatClock(m.atMs)} ${escapeSlack(m.text)}`)
          .join('\n')}`,
      ),
    );
  if (f.runUrl) blocks.push(context(`<${f.runUrl}|workflow run>`));
  return {
    text: `Migration ${f.migrationId}: ${f.phase}${f.lagBytes !== null ? `, lag ${formatBytes(f.lagBytes)}` : ''}`,
    blocks,
  };
}

export function renderCleanConfirm(migrationId: string, prune: boolean, value: string): SlackMessage {
  const what = `the replication slot and publications of \`${escapeSlack(migrationId)}\` on the source and its state on the target${prune ? ', and prune the work folder' : ''}`;
  return {
    text: `Clean migration ${migrationId}?`,
    blocks: [
      section(`:broom: This drops ${what}. The replay of this migration must be finished or stopped.`),
      {
        type: 'actions',
        block_id: 'plm_clean',
        elements: [
          {
            type: 'button',
            action_id: ActionId.clean,
            text: plain(prune ? 'Clean --prune' : 'Clean'),
            value,
            style: 'danger',
            confirm: {
              title: plain('Clean this migration?'),
              text: mrkdwn(`Drop ${what}? This cannot be undone.`),
              confirm: plain('Clean'),
              deny: plain('Cancel'),
              style: 'danger',
            },
          },
        ],
      },
    ],
  };
}

/** What `clean` removed, as the thread is told. */
export function renderCleanResult(
  migrationId: string,
  r: {
    slotDropped: boolean;
    publicationsDropped: string[];
    targetRowsDeleted: number;
    targetSchemaDropped: boolean;
    pruned: string[];
  },
): SlackMessage {
  const removed = [
    r.slotDropped ? 'the replication slot' : 'no slot (none was left)',
    r.publicationsDropped.length
      ? `publications ${r.publicationsDropped.map(escapeSlack).join(', ')}`
      : 'no publications',
    `${r.targetRowsDeleted} state rows on the target${r.targetSchemaDropped ? ' and the schema _pg_live_migrate' : ''}`,
    ...(r.pruned.length ? [`${r.pruned.length} entries of the work folder`] : []),
  ];
  return one(`:broom: Cleaned \`${escapeSlack(migrationId)}\`: removed ${removed.join('; ')}.`);
}

export const USAGE = [
  '*Usage:* `/migrate <command> [migration-id]`',
  '• `/migrate status [id]`: phase, lag, ETA, last milestones (only you see it)',
  '• `/migrate cutover [id] [--checksum]`: asks for an approval in the channel; an approver other than you approves',
  '• `/migrate validate [id] [--checksum]`: compares source and target; the table goes to the thread',
  '• `/migrate clean [id] --prune`: drops the slot, publications and state (asks for confirmation)',
].join('\n');

export function renderUsage(problem?: string): SlackMessage {
  return {
    text: problem ?? 'Usage',
    blocks: [section(`${problem ? `${escapeSlack(problem)}\n` : ''}${USAGE}`)],
  };
}

/** One line of the audit trail (decisions and what the bot did about them). */
export function renderAudit(text: string, nowMs: number): SlackMessage {
  return { text, blocks: [section(text), context(formatClock(nowMs))] };
}

export { mention as slackMention };
