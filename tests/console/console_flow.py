"""The seed's flow through the operator console, in a real browser.

Debian's Chromium driven by Playwright for Python (no browser download: executable_path),
against a real edgegw and a real mTLS backend that tests/tests/console.rs started. Every
step is what an operator does in the guide, in order; each assertion names what failed.

Environment (set by tests/tests/console.rs):
  CONSOLE_URL      the admin listener, e.g. http://127.0.0.1:9090/
  CONSOLE_TOKEN    the admin token
  CONSOLE_P12      a .pfx of client-1, CONSOLE_P12_PASSWORD its password
  CONSOLE_XSS_P12  a .pfx whose subject holds an <img onerror> payload (same password)
  CONSOLE_THUMBPRINT  client-1's SHA-1 thumbprint (40 hex)
  CONSOLE_BACKEND  the backend URL (self-signed: chain validation off)
  CONSOLE_SHOTS    the folder for screenshots (one per page, 1280x800)
"""

import os
import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

URL = os.environ["CONSOLE_URL"]
TOKEN = os.environ["CONSOLE_TOKEN"]
P12 = os.environ["CONSOLE_P12"]
PASSWORD = os.environ["CONSOLE_P12_PASSWORD"]
XSS_P12 = os.environ["CONSOLE_XSS_P12"]
THUMBPRINT = os.environ["CONSOLE_THUMBPRINT"].upper()
BACKEND = os.environ["CONSOLE_BACKEND"]
SHOTS = Path(os.environ["CONSOLE_SHOTS"])

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def tid(page, name):
    return page.get_by_test_id(name)


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def main():
    dialogs = []
    errors = []
    # Confirmations the flow asks for itself (it sets this just before the click).
    expected_confirm = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(10_000)
        # A dialog that opens by itself is an injected script running: fail on any.
        def on_dialog(d):
            if expected_confirm and d.type == "confirm":
                expected_confirm.pop()
                d.accept()
            else:
                dialogs.append(f"{d.type}: {d.message}")
                d.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda e: errors.append(str(e)))

        # The page and its security headers.
        response = page.goto(URL)
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
        assert response.headers.get("x-frame-options") == "DENY", response.headers

        # Sign in: a wrong token says so; the right one opens the console.
        tid(page, "signin-token").fill("not-the-token")
        tid(page, "signin-submit").click()
        expect(tid(page, "signin-error")).to_be_visible()
        shot(page, "signin")
        tid(page, "signin-token").fill(TOKEN)
        tid(page, "signin-submit").click()
        expect(tid(page, "signout")).to_be_visible()
        assert TOKEN not in page.url, "the token must never be in the URL"

        # Client certificates: add one, wrong password first.
        tid(page, "nav-certificates").click()
        tid(page, "add-certificate").click()
        tid(page, "cert-file").set_input_files(P12)
        tid(page, "cert-id").fill("client-1")
        tid(page, "cert-password").fill("wrong-password")
        tid(page, "cert-submit").click()
        expect(tid(page, "field-error-password")).to_be_visible()
        tid(page, "cert-password").fill(PASSWORD)
        tid(page, "cert-submit").click()
        row = tid(page, "cert-row-client-1")
        expect(row).to_be_visible()
        expect(row).to_contain_text(THUMBPRINT)

        # A subject with markup is text: no dialog, no element made from it.
        tid(page, "add-certificate").click()
        tid(page, "cert-file").set_input_files(XSS_P12)
        tid(page, "cert-id").fill("xss")
        tid(page, "cert-password").fill(PASSWORD)
        tid(page, "cert-submit").click()
        xss_row = tid(page, "cert-row-xss")
        # The subject as the API gives it (RFC 4514 escapes < and >), shown as text.
        expect(xss_row).to_contain_text(r"CN=\<img src=x onerror=alert(1)\>")
        assert xss_row.locator("img").count() == 0, "markup in a subject became an element"
        shot(page, "certificates")

        # The backend (self-signed: chain validation off) and the API.
        tid(page, "nav-backends").click()
        shot(page, "backends")
        page.get_by_test_id("add-backend").click()
        tid(page, "backend-id").fill("be1")
        tid(page, "backend-url").fill(BACKEND)
        chain = tid(page, "backend-validate-chain")
        if chain.is_checked():
            chain.uncheck()
        page.get_by_test_id("backend-save").click()
        expect(tid(page, "backend-row-be1")).to_be_visible()

        tid(page, "nav-apis").click()
        page.get_by_test_id("add-api").click()
        tid(page, "api-id").fill("orders")
        tid(page, "api-path").fill("/orders")
        tid(page, "api-backend").select_option("be1")
        page.get_by_test_id("api-save").click()
        expect(tid(page, "api-row-orders")).to_be_visible()
        shot(page, "apis")

        # Design tab: gateway credentials = client certificate client-1, Save.
        tid(page, "api-row-orders").get_by_role("link").first.click()
        tid(page, "design-credentials").select_option(label="Client certificate")
        tid(page, "design-certificate").select_option("client-1")
        tid(page, "design-save").click()
        editor = tid(page, "policy-editor")
        expect(editor).to_have_value(
            __import__("re").compile(r'authentication-certificate certificate-id="client-1"')
        )
        shot(page, "design")

        # A broken policy shows its line and column, and the stored one stays.
        good = editor.input_value()
        editor.fill("<policies>\n  <inbound>\n    <rate-limit calls=\"1\" />\n  </inbound>\n</policies>")
        tid(page, "policy-save").click()
        expect(tid(page, "policy-error")).to_contain_text("line 3")
        editor.fill(good)
        tid(page, "policy-save").click()

        # A test call through the gateway: 200, and the thumbprint presented.
        tid(page, "nav-test").click()
        tid(page, "test-api").select_option("orders")
        tid(page, "test-path").fill("/orders/1")
        tid(page, "test-send").click()
        expect(tid(page, "test-status")).to_contain_text("200")
        expect(tid(page, "test-thumbprint")).to_contain_text(THUMBPRINT)
        shot(page, "test")

        # Delete the certificate the API uses: the warning names the API.
        tid(page, "nav-certificates").click()
        expected_confirm.append(True)
        tid(page, "delete-certificate-client-1").click()
        warning = tid(page, "in-use-warning")
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("orders")
        expect(warning).to_contain_text("be1")
        shot(page, "in-use")

        # Unbind (API: None; backend has none), then the delete goes through.
        page.keyboard.press("Escape")
        page.goto(URL + "#/apis/orders")
        tid(page, "design-credentials").select_option(label="None")
        tid(page, "design-save").click()
        expect(tid(page, "policy-editor")).not_to_have_value(
            __import__("re").compile("authentication-certificate")
        )
        tid(page, "nav-certificates").click()
        expected_confirm.append(True)
        tid(page, "delete-certificate-client-1").click()
        expect(tid(page, "cert-row-client-1")).to_have_count(0)

        tid(page, "nav-overview").click()
        shot(page, "overview")
        # A phone-width screen still shows the page.
        page.set_viewport_size({"width": 390, "height": 844})
        tid(page, "nav-certificates").click()
        shot(page, "certificates-phone")

        # Sign-out forgets the token.
        tid(page, "signout").click()
        expect(tid(page, "signin-token")).to_be_visible()
        assert page.evaluate("() => JSON.stringify(sessionStorage)").find(TOKEN) < 0
        browser.close()

    # Confirmation dialogs are accepted above; any other dialog is an injected script.
    assert not dialogs, f"unexpected dialogs (an injected script ran?): {dialogs}"
    assert not errors, f"page errors: {errors}"
    print("console flow: ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"console flow failed: {e}", file=sys.stderr)
        raise
