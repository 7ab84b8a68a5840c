/**
 * The history checker judges every fault property; a checker that passes a bad history, or fails
 * a good one, makes those properties say nothing. These are its cases, each a history as
 * `tandem client --json` writes it.
 */
import { describe, expect, it } from "vitest";
import { checkHistory, type Line } from "../helpers/history.js";

const S = "s1";
const ok = (n: number): Line => ({ type: "response", request: `${S}.${n}`, session: S, n, ok: true, server: "srv0" });
const gaveUp = (n: number): Line => ({ type: "response", request: `${S}.${n}`, session: S, n, ok: false, error: "TANDEM_DEADLINE", server: "", expect: ["TANDEM_DEADLINE"] });
const deadline = (n: number): Line => ({ type: "response", request: `${S}.${n}`, session: S, n, ok: false, error: "TANDEM_DEADLINE", server: "manager", expect: ["TANDEM_DEADLINE"] });
const taken = (upTo: number): Line => ({ type: "taken", session: S, upTo });
const resumed = (at: number, sent: number): Line => ({ type: "resumed", session: S, taken: at, restart: { sent } });
const summary: Line = { type: "summary", complete: true };

const check = (lines: Line[], expected: number) => checkHistory([{ name: "c", expected, lines }]).problems;
const poolTaken = (upTo: number, also: number[]): Line => ({ type: "taken", session: S, upTo, also });
const poolResumed = (at: number, also: number[], sent: number): Line => ({ type: "resumed", session: S, taken: at, takenAlso: also, unordered: true, restart: { sent } });
const checkPool = (lines: Line[], expected: number) => checkHistory([{ name: "p", expected, lines, unordered: true }]).problems;

describe("history checker", () => {
  it("passes a session answered once, in order", () => {
    expect(check([ok(1), ok(2), taken(2), ok(3), taken(3), summary], 3)).toEqual([]);
  });

  it("names a request that reached the application twice in one incarnation", () => {
    expect(check([ok(1), ok(2), ok(2), taken(2), summary], 2)).toEqual(["I2 c: s1.2 reached the application twice", "I3 c: session s1 got 2 after 2"]);
  });

  it("names a committed request delivered again after a resume", () => {
    expect(check([ok(1), ok(2), taken(2), resumed(2, 2), ok(2), summary], 2)).toEqual(["I2 c: s1.2 reached the application twice", "I3 c: session s1 got 2 after 2"]);
  });

  it("sets aside uncommitted answers of a killed incarnation, a local give-up above every ordered answer included", () => {
    // Window 3: 11 and 12 at a server, 13 given up by its caller's timer; the process dies with 10
    // committed; the resumed session gets 11, 12 and 13's real outcome from the manager.
    const lines = [...Array.from({ length: 10 }, (_, i) => ok(i + 1)), taken(10), gaveUp(13), resumed(10, 13), ok(11), ok(12), deadline(13), taken(13), summary];
    expect(check(lines, 13)).toEqual([]);
  });

  it("names a resume below a watermark an earlier incarnation committed", () => {
    expect(check([ok(1), ok(2), taken(2), resumed(1, 2), ok(2), summary], 2)).toEqual(["I2 c: session s1 resumed at 1 below its committed 2"]);
  });

  it("names an answer out of order, but not a local give-up, which is its caller's timer", () => {
    expect(check([ok(1), ok(3), ok(2), summary], 3)).toEqual(["I3 c: session s1 got 2 after 3"]);
    expect(check([ok(1), gaveUp(3), ok(2), summary], 3)).toEqual([]);
  });

  it("names restart data older than what was answered, and requests never answered", () => {
    expect(check([ok(1), ok(2), resumed(2, 1), summary], 2)).toEqual(["I6 c: session s1 resumed with restart data 1 < 2 already answered"]);
    expect(check([ok(1), ok(3), summary], 3)).toEqual(["I1 c: 2 of 3 requests answered; missing s1.2"]);
  });

  it("names a last incarnation that did not finish", () => {
    expect(check([ok(1)], 1)).toEqual(['I1 c: the last incarnation did not finish (null)']);
  });

  describe("an unordered pool", () => {
    it("passes answers in any order, each once", () => {
      expect(checkPool([ok(3), ok(1), poolTaken(1, [3]), ok(2), poolTaken(3, []), summary], 3)).toEqual([]);
    });

    it("sets aside what a resumed set lacks, and names a committed one delivered again", () => {
      // 3 committed above the floor, 2 handed but not committed: 2 may come again, 3 may not.
      expect(checkPool([ok(3), ok(2), poolTaken(0, [3]), poolResumed(0, [3], 3), ok(1), ok(2), poolTaken(3, []), summary], 3)).toEqual([]);
      expect(checkPool([ok(3), poolTaken(0, [3]), poolResumed(0, [3], 3), ok(3), ok(1), ok(2), summary], 3)).toEqual(["I2 p: s1.3 reached the application twice"]);
    });

    it("names a resumed set that lost a commit", () => {
      expect(checkPool([ok(3), poolTaken(0, [3]), poolResumed(0, [], 3), ok(1), ok(2), summary], 3)).toEqual(["I2 p: session s1 resumed without 3, which it had committed", "I1 p: 2 of 3 requests answered; missing (after the last answered)"]);
    });

    it("still names a request answered twice in one incarnation", () => {
      expect(checkPool([ok(2), ok(1), ok(2), summary], 2)).toEqual(["I2 p: s1.2 reached the application twice"]);
    });
  });
});
