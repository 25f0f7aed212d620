// Drives mcgw's status page in Debian's headless Chromium, one command per
// stdin line, one JSON answer per stdout line (tests/integration/test_ops_page.py
// holds the tunnels and sends the commands):
//   {"cmd":"open","url":...,"width":W,"height":H}  load the page in a fresh context
//   {"cmd":"wait_text","selector":S,"text":T}       until S's text is T (deadline 20 s)
//   {"cmd":"wait_match","selector":S,"pattern":P}   until S's text matches regex P (deadline
//                                                    "timeout_s", default 20 s)
//   {"cmd":"text","selector":S}                     S's text
//   {"cmd":"rows","selector":S}                     the cells' texts of each row (tr) in S
//   {"cmd":"style","selector":S}                    S's class, visibility and computed colour,
//                                                    and the page's palette (--ok, --warn, --bad)
//   {"cmd":"overflow"}                               page wider than the viewport?
//   {"cmd":"click","selector":S}                    clicks S
//   {"cmd":"attr","selector":S,"name":N}            S's attribute N (null when absent)
//   {"cmd":"screenshot","path":P}
//   {"cmd":"errors"}                                 console errors, page errors, CSP reports
//   {"cmd":"quit"}
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const DEADLINE_MS = 20000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Playwright gives every launch a fresh, temporary user-data dir.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

let page = null;
const errors = [];

async function open({ url, width, height }) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1,
                                             isMobile: width < 500, hasTouch: width < 500 });
  page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
  page.on('pageerror', (e) => errors.push('pageerror: ' + e.message));
  page.on('requestfailed', (r) => errors.push('requestfailed: ' + r.url()));
  await page.goto(url, { waitUntil: 'load' });
  return {};
}

const handlers = {
  open,
  async wait_text({ selector, text }) {
    const el = page.locator(selector);
    const deadline = Date.now() + DEADLINE_MS;
    let last = null;
    while (Date.now() < deadline) {
      last = (await el.textContent()).trim();
      if (last === text) return { text: last };
      await page.waitForTimeout(100); // polling the DOM with a deadline
    }
    throw new Error(`${selector}: wanted ${JSON.stringify(text)}, still ${JSON.stringify(last)}`);
  },
  async wait_match({ selector, pattern, timeout_s }) {
    const el = page.locator(selector), re = new RegExp(pattern);
    const deadline = Date.now() + (timeout_s ? timeout_s * 1000 : DEADLINE_MS);
    let last = null;
    while (Date.now() < deadline) {
      last = (await el.textContent()).trim();
      if (re.test(last)) return { text: last };
      await page.waitForTimeout(100); // polling the DOM with a deadline
    }
    throw new Error(`${selector}: wanted /${pattern}/, still ${JSON.stringify(last)}`);
  },
  async style({ selector }) {
    const el = page.locator(selector);
    const out = await el.evaluate((e) => {
      // Each palette colour as computed by the browser, via a probe element.
      const probe = document.createElement('span');
      document.body.append(probe);
      const palette = {};
      for (const k of ['ok', 'warn', 'bad', 'fg']) {
        probe.style.color = `var(--${k})`;
        palette[k] = getComputedStyle(probe).color;
      }
      probe.remove();
      return { className: e.className, color: getComputedStyle(e).color, palette };
    });
    return { ...out, visible: await el.isVisible() };
  },
  async click({ selector }) { await page.locator(selector).click(); return {}; },
  async attr({ selector, name }) { return { value: await page.locator(selector).getAttribute(name) }; },
  async text({ selector }) { return { text: (await page.locator(selector).textContent()).trim() }; },
  async rows({ selector }) {
    return { rows: await page.locator(selector + ' tr').evaluateAll(
      (trs) => trs.map((tr) => Array.from(tr.cells, (c) => c.textContent.trim()))) };
  },
  async overflow() {
    return page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
  },
  async screenshot({ path }) { await page.screenshot({ path, fullPage: true }); return {}; },
  async errors() { return { errors }; },
};

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const msg = JSON.parse(line);
  if (msg.cmd === 'quit') break;
  try {
    const out = await handlers[msg.cmd](msg);
    process.stdout.write(JSON.stringify({ ok: true, ...out }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message || e) }) + '\n');
  }
}
await browser.close();
