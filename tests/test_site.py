"""``rsbench site``: the static website, its links, and (where Debian's chromium and chromium-driver are
installed) the pages in a real headless browser."""

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_leaderboard import add_run, checkpoint_hash, make_rows, make_store
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.store.redaction import redact

runner = CliRunner()


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        target = attrs.get("href") if tag in ("a", "link") else attrs.get("src")
        if target and tag in ("a", "link", "img", "script"):
            self.targets.append(target.split("#")[0])


@pytest.fixture
def site(tmp_path):
    """gaussian (ACR 0.225, 2 seeds) and stability (ACR 0.5) share a protocol; consistency (grid certifier)
    has its own table."""
    store = make_store(tmp_path / "s.db")
    add_run(store, make_rows([1, 2, 3, 4], [1, 2, 3, 4], [0.5] * 4, [110] * 4), "stability", {"lam": 2.0}, 0)
    result = runner.invoke(
        app, ["site", str(tmp_path / "site"), "--db", str(tmp_path / "s.db"), "--no-reported", "--radii", "0:0.75:0.25"]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "site"


def test_site_pages_and_every_link_resolve(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert pages == ["index.html", "mnist.html", "runs/1.html", "runs/2.html", "runs/3.html", "runs/4.html"]
    for page in site.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        for target in (t for t in parser.targets if t):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to missing {target}"
    board = (site / "mnist.html").read_text()
    assert "2 certification protocols at this σ" in board and "≥ 0.4250" in board
    run = (site / "runs" / "1.html").read_text()
    assert "abc123" in run and checkpoint_hash("gaussian", 0) in run and '<svg class="histogram"' in run
    assert redact("postgresql://ann:secret@db.example/rs") == "postgresql://ann:***@db.example/rs"


def browser():
    """Debian's chromium driven through chromium-driver (selenium); skipped with the reason where absent."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium "
            "chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install .[test])")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def column(table, index):
    return [
        row.find_elements("css selector", "td")[index].text for row in table.find_elements("css selector", "tbody tr")
    ]


def test_site_in_a_headless_browser(site, tmp_path):
    driver = browser()
    try:
        driver.get((site / "index.html").as_uri())
        assert driver.save_screenshot(str(tmp_path / "index.png"))
        driver.find_element("link text", "mnist").click()
        assert driver.title.startswith("mnist")
        tables = driver.find_elements("css selector", "table.leaderboard")  # one table per protocol
        grid = next(t for t in tables if column(t, 0) == ["consistency"])
        first = next(t for t in tables if t is not grid)
        assert len(tables) == 2 and column(first, 0) == ["stability", "gaussian"]  # ranked by ACR
        headers = first.find_elements("css selector", "thead th")
        acr = next(i for i, h in enumerate(headers) if h.text == "ACR")
        assert column(first, acr) == ["0.5000 [0.5000, 0.5000]", "0.2250 ± 0.0707 [0.0000, 0.4764]"]
        headers[acr].find_element("css selector", "button").click()
        assert column(first, 0) == ["gaussian", "stability"] and headers[acr].get_attribute("aria-sort") == "ascending"
        headers[acr].find_element("css selector", "button").click()
        assert column(first, 0) == ["stability", "gaussian"] and headers[acr].get_attribute("aria-sort") == "descending"
        assert driver.save_screenshot(str(tmp_path / "mnist.png"))
        links = [a.get_attribute("href") for a in driver.find_elements("css selector", "a.run")]
        assert len(links) == 4
        for link in links:
            driver.get(link)
            run_id = Path(link).stem
            assert driver.find_element("css selector", "h1").text.startswith(f"Run {run_id}:")
            assert driver.find_elements("css selector", "svg.histogram rect")
    finally:
        driver.quit()
    assert (tmp_path / "mnist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_pages_write_indices_compactly():
    from rsbench.results.site import compact_indices

    assert compact_indices(range(0, 10_000, 20)) == "0:10000:20 (500 indices)"  # = range(0, 10000, 20)
    assert compact_indices([9, 0, 1, 2, 5, 7, 20]) == "0:3:1, 5:11:2, 20 (7 indices)"
    assert compact_indices([3]) == "3 (1 index)"
    many = compact_indices([i * i for i in range(100)])
    assert many.endswith("(100 indices)") and "more runs" in many
