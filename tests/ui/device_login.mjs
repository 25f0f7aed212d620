// A non-3GPP device's browser logs in to the IdMS through mcgw: Debian's
// headless Chromium with the gateway as its HTTP proxy, driven by
// playwright-core (tests/integration/test_e2e_browser.py).
//
//   node device_login.mjs '{"url":..., "proxy":"http://127.0.0.1:P", "home":DIR,
//                          "user":..., "password":..., "shots":DIR}'
//
// home: a HOME whose .pki/nssdb trusts the test CA (Chromium on Linux reads
// locally added trust anchors from there): the IdMS's certificate is
// verified, never ignored. Loopback is not bypassed (<-loopback>), except
// 127.0.0.1, where the app's redirect URI listens (RFC 8252 7.3): so the
// IdMS (127.0.0.2, 127.0.0.3) is reached only through the gateway.
//
// Prints one JSON line: {"pages": [...titles and URLs without queries], "final": text}
// Exits non-zero with the error on stderr.
import { chromium } from 'playwright-core';

const o = JSON.parse(process.argv[2]);
const DEADLINE_MS = 20000;
const strip = (u) => u.split('?')[0];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  env: { ...process.env, HOME: o.home },
  // Playwright gives every launch a fresh, temporary --user-data-dir.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         `--proxy-server=${o.proxy}`, '--proxy-bypass-list=<-loopback>;127.0.0.1'],
});
const pages = [];
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  await page.goto(o.url, { waitUntil: 'load' });
  pages.push({ step: 'login', url: strip(page.url()), title: await page.title() });
  await page.fill('input[name="login"]', o.user);
  await page.fill('input[name="password"]', o.password);
  await page.screenshot({ path: `${o.shots}/browser-1-login.png` });
  await Promise.all([page.waitForURL(/\/interaction\//), page.click('button[type="submit"]')]);
  await page.waitForSelector('input[name="prompt"][value="consent"]', { state: 'attached' });
  pages.push({ step: 'consent', url: strip(page.url()), title: await page.title() });
  await page.screenshot({ path: `${o.shots}/browser-2-consent.png` });
  await Promise.all([page.waitForURL(/^http:\/\/127\.0\.0\.1:\d+\//), page.click('button[type="submit"]')]);
  const final = (await page.textContent('body')).trim();
  pages.push({ step: 'redirect', url: strip(page.url()) });
  await page.screenshot({ path: `${o.shots}/browser-3-done.png` });
  process.stdout.write(`${JSON.stringify({ pages, final })}\n`);
} catch (e) {
  process.stderr.write(`browser: ${e.message}\npages so far: ${JSON.stringify(pages)}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
