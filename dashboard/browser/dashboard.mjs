// Drives Debian's chromium through the dashboard as a person would: the page shows the seeded dead letters, the
// person opens the subscription's dead letters, redrives the one reason group (confirming the dialog), and sees the
// dead-letter queue empty and the backlog handled. Along the way it checks that only a non-zero DLQ is bold red, that
// the action log's Who shows the client and peer (the full user agent on hover), and that the redriven message's
// timeline keeps every step. Screenshots: the dead letters before (README) and the page after.
//   node dashboard.mjs URL SUBSCRIPTION(topic/sub) COUNT REASON SCREENSHOT_BEFORE SCREENSHOT_AFTER
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, subscription, count, reason, before, after] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "tidings-chromium-"));
// A fresh profile directory (playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1200, height: 760 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const step = (s) => console.log(`browser: ${s}`);
// The computed look of an element: its font weight and whether its colour is red.
const look = (loc) => loc.evaluate((e) => {
  const s = getComputedStyle(e);
  const [r, g, b] = s.color.match(/\d+/g).map(Number);
  return { weight: Number(s.fontWeight), color: s.color, red: r > 140 && g < 90 && b < 90 };
});
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("pageerror", (e) => { console.error(`page error: ${e}`); process.exitCode = 1; });
  await page.goto(url);
  const row = page.locator(`#topology tr[data-sub="${subscription}"]`);
  await row.locator(".dlq-count", { hasText: new RegExp(`^${count}$`) }).waitFor({ timeout: 60000 });
  step(`topology shows ${subscription} with ${count} dead letters`);
  // AWS holds delayed messages in the subscribing processes: the Scheduled column is unknown, with the reason.
  await row.locator(".scheduled", { hasText: /^–$/ }).waitFor({ timeout: 10000 });
  await page.locator("#unknown li", { hasText: "scheduled: delayed messages are held" }).waitFor({ timeout: 10000 });
  step("scheduled is unknown here, with the reason");
  const alarm = await look(row.locator(".dlq-count"));
  if (!(alarm.weight >= 600 && alarm.red)) throw new Error(`a DLQ of ${count} should be bold red: ${JSON.stringify(alarm)}`);
  step(`the DLQ of ${count} is bold red (${alarm.weight}, ${alarm.color})`);
  // Rates need a second sample (the page refreshes every 5 s); the DLQ's depth is steady, so its rate is 0.
  await row.locator(".dlq-rate", { hasText: /^-?0(\.00)?$/ }).waitFor({ timeout: 60000 });
  step("rates are shown");
  await row.locator(".cost", { hasText: /^\$\d/ }).waitFor({ timeout: 60000 });
  step(`cost per subscription is shown: ${await row.locator(".cost").textContent()}`);
  await row.getByRole("button", { name: "Dead letters" }).click();
  const group = page.locator(`#groups tr[data-reason="${reason}"]`);
  await group.locator(".group-count", { hasText: new RegExp(`^${count}$`) }).waitFor({ timeout: 60000 });
  step(`group "${reason}" shows ${count}`);
  const id = (await group.locator(".message-id").first().textContent()).trim();
  await group.locator(".message-id").first().click();
  await page.locator('#timeline li[data-what="dead-lettered"]', { hasText: reason }).waitFor({ timeout: 60000 });
  await page.locator('#timeline li[data-what="published"]').waitFor({ timeout: 10000 });
  step(`timeline of ${id} shows published, attempts and dead-lettered`);
  await page.screenshot({ path: before, fullPage: true });
  await group.getByRole("button", { name: "Redrive" }).click();
  const dialog = page.locator("dialog#confirm");
  await dialog.waitFor({ state: "visible" });
  const question = await dialog.locator("#confirm-text").textContent();
  if (!question.includes(reason)) throw new Error(`confirmation does not name the group: ${question}`);
  await dialog.getByRole("button", { name: "Confirm" }).click();
  step("redrive confirmed");
  await page.locator("#dlq-empty").waitFor({ state: "visible", timeout: 60000 });
  await row.locator(".dlq-count", { hasText: /^0$/ }).waitFor({ timeout: 60000 });
  step("the dead-letter queue is empty");
  const calm = await look(row.locator(".dlq-count"));
  if (calm.weight >= 600 || calm.red) throw new Error(`a DLQ of 0 should be plain: ${JSON.stringify(calm)}`);
  step(`the DLQ of 0 is neither bold nor red (${calm.weight}, ${calm.color})`);
  await row.locator(".backlog", { hasText: /^0$/ }).waitFor({ timeout: 120000 });
  step("the backlog is handled");
  const logged = page.locator("#log tbody tr", { hasText: "redrive" }).first();
  await logged.waitFor({ timeout: 10000 });
  step("the action is logged");
  // Who: the browser's short name and the peer; the full user agent on hover (the title).
  const who = logged.locator("td.who");
  const [whoText, whoTitle, agent] = [(await who.textContent()).trim(), await who.getAttribute("title"),
    await page.evaluate(() => navigator.userAgent)];
  if (!/^Chrome \d+( headless)? 127\.0\.0\.1:\d+$/.test(whoText)) throw new Error(`Who should be client and peer: ${whoText}`);
  if (whoTitle !== agent) throw new Error(`Who's title should be the user agent ${agent}: ${whoTitle}`);
  step(`who shows "${whoText}" with the user agent on hover`);
  await page.locator("#timeline-form button").click();
  await page.locator('#timeline li[data-what="redriven"]').waitFor({ timeout: 30000 });
  const steps = await page.locator("#timeline li").evaluateAll((ls) => ls.map((l) => l.dataset.what));
  const want = ["published", "attempts", "dead-lettered", "redriven"];
  if (JSON.stringify(steps) !== JSON.stringify(want)) throw new Error(`timeline after the redrive: ${steps}, want ${want}`);
  step(`timeline of ${id} keeps published, attempts, dead-lettered and shows redriven`);
  await page.screenshot({ path: after, fullPage: true });
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
