// Drives Debian's chromium through the dashboard as a person would: the page shows the seeded dead letters, the
// person opens the subscription's dead letters, redrives the one reason group (confirming the dialog), and sees the
// dead-letter queue empty and the backlog handled. Screenshots: the dead letters before (README) and the page after.
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
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("pageerror", (e) => { console.error(`page error: ${e}`); process.exitCode = 1; });
  await page.goto(url);
  const row = page.locator(`#topology tr[data-sub="${subscription}"]`);
  await row.locator(".dlq-count", { hasText: new RegExp(`^${count}$`) }).waitFor({ timeout: 60000 });
  step(`topology shows ${subscription} with ${count} dead letters`);
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
  await row.locator(".backlog", { hasText: /^0$/ }).waitFor({ timeout: 120000 });
  step("the backlog is handled");
  await page.locator("#log tbody tr", { hasText: "redrive" }).first().waitFor({ timeout: 10000 });
  step("the action is logged");
  await page.locator("#timeline-form button").click();
  await page.locator('#timeline li[data-what="redriven"]').waitFor({ timeout: 30000 });
  step(`timeline of ${id} shows redriven`);
  await page.screenshot({ path: after, fullPage: true });
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
