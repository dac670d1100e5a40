// The ports of the Slack notifier and bot: what they need from Slack, GitHub and the target's control
// schema, as plain interfaces (adapters implement them; workflows wire them). Types only, no behaviour.

/** A Slack message: fallback text (notifications, screen readers) and Block Kit blocks. */
export interface SlackMessage {
  text: string;
  blocks?: SlackBlock[];
}

/** The subset of Block Kit this tool renders (plain objects, so the core needs no Slack library). */
export type SlackBlock =
  | { type: 'header'; text: { type: 'plain_text'; text: string } }
  | {
      type: 'section';
      text?: { type: 'mrkdwn'; text: string };
      fields?: { type: 'mrkdwn'; text: string }[];
    }
  | { type: 'context'; elements: { type: 'mrkdwn'; text: string }[] }
  | { type: 'divider' }
  | { type: 'actions'; block_id?: string; elements: SlackButton[] };

export interface SlackButton {
  type: 'button';
  action_id: string;
  text: { type: 'plain_text'; text: string };
  value: string;
  style?: 'primary' | 'danger';
  confirm?: {
    title: { type: 'plain_text'; text: string };
    text: { type: 'mrkdwn'; text: string };
    confirm: { type: 'plain_text'; text: string };
    deny: { type: 'plain_text'; text: string };
    style?: 'primary' | 'danger';
  };
}

/** Where a message lives: Slack identifies a message by its channel and timestamp. */
export interface MessageRef {
  channel: string;
  ts: string;
}

/** What the bot shows besides the live figures: kept next to the message ref on the target. */
export interface MigrationNotes {
  /** The last few milestones, newest last. */
  milestones: { atMs: number; text: string }[];
  lastValidation: { ok: boolean; tables: number; differing: number; checksum: boolean; atMs: number } | null;
  /** The workflow run (or other place) where the engine runs, when known. */
  runUrl: string | null;
}

/** The one message per migration, stored on the target so a resumed run or a new runner edits it. */
export interface MessageRefStore {
  get(migrationId: string): Promise<(MessageRef & { notes: MigrationNotes }) | undefined>;
  /**
   * Records the ref unless one is recorded already (another process won the race) and returns the one
   * that is recorded; `replace` overwrites (the old message was deleted in Slack).
   */
  put(migrationId: string, ref: MessageRef, options?: { replace?: boolean }): Promise<MessageRef>;
  /** Merges into the notes; never creates the control schema (a cleaned target stays clean). */
  patchNotes(migrationId: string, patch: Partial<MigrationNotes> & { milestone?: string }): Promise<void>;
}

export type ApprovalVerdict = 'approved' | 'rejected';

export interface ApprovalRecord {
  migrationId: string;
  /** Names the request (carried by its buttons). */
  key: string;
  /** The approval message (a reply in the migration's thread). */
  ref: MessageRef;
  requestedBy: string;
  requestedAtMs: number;
  checksum: boolean;
  decision: { verdict: ApprovalVerdict; by: string; atMs: number } | null;
}

/** Approval requests, decided at most once even across double clicks and several bot processes. */
export interface ApprovalStore {
  create(record: ApprovalRecord): Promise<void>;
  read(migrationId: string, key: string): Promise<ApprovalRecord | undefined>;
  /** Sets the decision only if none is set; returns false when someone decided first. */
  decide(
    migrationId: string,
    key: string,
    decision: NonNullable<ApprovalRecord['decision']>,
  ): Promise<boolean>;
}

/** Slack as the bot uses it. Every call is bounded (retries with Retry-After, then it throws). */
export interface SlackChat {
  post(
    input: { channel: string; threadTs?: string; broadcast?: boolean } & SlackMessage,
  ): Promise<MessageRef>;
  update(ref: MessageRef, message: SlackMessage): Promise<void>;
  /** Members of a Slack user group (usergroups.users.list). */
  groupMembers(groupId: string): Promise<string[]>;
}

/** An answer only the person who asked sees (slash command or button response_url). */
export interface Reply {
  ephemeral(message: SlackMessage & { replaceOriginal?: boolean }): Promise<void>;
}

export interface SlashCommandInput {
  userId: string;
  channelId: string;
  text: string;
}

export interface ButtonInput {
  userId: string;
  actionId: string;
  value: string;
  channelId: string;
  messageTs: string;
}

/** What the Slack transport calls after it has acknowledged the request (within Slack's 3 s). */
export interface BotHandlers {
  onCommand(input: SlashCommandInput, reply: Reply): Promise<void>;
  onButton(input: ButtonInput, reply: Reply): Promise<void>;
  /** GitHub App webhook deliveries (signature already verified); returns when handled. */
  onGitHubEvent?(event: string, payload: unknown): Promise<void>;
}

/** A workflow job waiting on the bot's custom deployment protection rule. */
export interface WaitingGate {
  runId: number;
  environment: string;
  runUrl: string;
}

/** The GitHub side of the bot: workflow dispatch and the custom deployment protection rule. */
export interface GitHubRuns {
  dispatch(inputs: Record<string, string>): Promise<void>;
  findWaitingGate(migrationId: string): Promise<WaitingGate | undefined>;
  /** Approves or rejects the gate, or (without a verdict) posts a status report on it. */
  reviewGate(
    gate: Pick<WaitingGate, 'runId' | 'environment'>,
    verdict: ApprovalVerdict | null,
    comment: string,
  ): Promise<void>;
  latestRunUrl(): Promise<string | undefined>;
}
