"""``rsbench site``: the static website, its links, and (where Debian's chromium and chromium-driver are
installed) the pages in a real headless browser."""

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_leaderboard import PROTOCOL, add_run, checkpoint_hash, make_rows, make_store
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.store import frame_rows
from rsbench.store.redaction import redact

runner = CliRunner()


PAPER_URL = 'https://example.org/paper?a=1&b="><script>alert(1)</script>'
HOSTILE_URL = "javascript:alert(1)"


class Links(HTMLParser):
    """Every link target of a page (``targets``, local part) and every ``<a>``'s attributes (``anchors``)."""

    def __init__(self):
        super().__init__()
        self.targets, self.anchors, self.scripts = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        target = attrs.get("href") if tag in ("a", "link") else attrs.get("src")
        if tag == "a":
            self.anchors.append(attrs)
        if tag == "script":
            self.scripts.append(attrs.get("src"))
        if target and tag in ("a", "link", "img", "script") and not target.startswith(("http://", "https://")):
            self.targets.append(target.split("#")[0])


def links_of(page):
    parser = Links()
    parser.feed(page.read_text())
    return parser


def add_imported_log(store):
    """An imported log at σ = 1.0 as a stranger's record might state it: a paper URL that tries to close its
    attribute, a ``javascript:`` code URL, a source (repository, commit, path), the importer's command line,
    and implementation knobs (forward batch 64)."""
    protocol = CertificationProtocol(
        kind="certify", dataset="mnist", split="test", sigma=1.0, train_sigma=1.0, certifier="cohen",
        certifier_params={"forward_batch": 64}, source_sha256="ab" * 32, **PROTOCOL,
    )  # fmt: skip
    source = {"repo": "someone/smoothing", "commit": "c0ffee" * 6 + "c0ff", "path": "logs/noise_1.00.tsv"}
    info = {"venue": "ICML", "year": 2019, "paper_url": PAPER_URL, "code_url": HOSTILE_URL}
    description = RunDescription(
        origin="imported", method="gaussian", params={}, arch="lenet",
        provenance={"command": "import_published_logs.py --mirrors /home/me", "model_info": info, "source": source},
    )  # fmt: skip
    rows = make_rows([1, 2, 3, 4], [1, 2, 3, 4], [0.3, 0.9, 1.2, 0.1], [110] * 4)
    store.import_run(protocol, description, [frame_rows(rows)], {"selections": [], "planned": [0, 1, 2, 3]})


@pytest.fixture
def site(tmp_path):
    """gaussian (ACR 0.225, 2 seeds) and stability (ACR 0.5) share a protocol; consistency (grid certifier)
    has its own table; an imported log (run 5) has σ = 1.0 to itself."""
    store = make_store(tmp_path / "s.db")
    add_run(store, make_rows([1, 2, 3, 4], [1, 2, 3, 4], [0.5] * 4, [110] * 4), "stability", {"lam": 2.0}, 0)
    add_imported_log(store)
    result = runner.invoke(
        app, ["site", str(tmp_path / "site"), "--db", str(tmp_path / "s.db"), "--no-reported", "--radii", "0:0.75:0.25"]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "site"


def test_site_pages_and_every_link_resolve(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert pages == [
        "index.html", "mnist.html", "runs/1.html", "runs/2.html", "runs/3.html", "runs/4.html", "runs/5.html",
        "submit.html",
    ]  # fmt: skip
    for page in site.rglob("*.html"):
        parser = links_of(page)
        for target in (t for t in parser.targets if t):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to missing {target}"
        assert any(a.get("href", "").endswith("submit.html") for a in parser.anchors), f"{page} lacks Submit"
    board = (site / "mnist.html").read_text()
    assert "2 certification protocols at this σ (they differ in: certifier" in board and "≥ 0.4250" in board
    run = (site / "runs" / "1.html").read_text()
    assert "abc123" in run and checkpoint_hash("gaussian", 0) in run and '<svg class="histogram"' in run
    assert redact("postgresql://ann:secret@db.example/rs") == "postgresql://ann:***@db.example/rs"
    submit = (site / "submit.html").read_text()
    for step in (
        "rsbench export RUN --format json -o record.json.gz",
        "rsbench validate record.json.gz",
        "pull request",
    ):
        assert step in submit


def test_paper_links_are_http_only_escaped_and_noopener(site):
    """The imported log's paper URL becomes one escaped link (the quote cannot end the attribute, the script
    tag stays text); its ``javascript:`` code URL becomes no link at all, on the board or the run page."""
    for page in (site / "mnist.html", site / "runs" / "5.html"):
        parser = links_of(page)
        assert all("javascript" not in a.get("href", "").lower() for a in parser.anchors)
        assert parser.scripts == [f"{'../' if page.parent.name == 'runs' else ''}assets/sort.js"]
    papers = [a for a in links_of(site / "mnist.html").anchors if a.get("class") == "paper"]
    assert len(papers) == 1 and papers[0]["rel"] == "noopener noreferrer"  # no code link
    assert papers[0]["href"].startswith("https://example.org/paper?a=1&b=") and '"' not in papers[0]["href"]
    assert ">ICML 2019</a>" in (site / "mnist.html").read_text()


def test_run_page_shows_the_log_source_knobs_apart_and_a_labelled_histogram(site):
    page = (site / "runs" / "5.html").read_text()
    source = page[page.index('id="source"') : page.index("</table>", page.index('id="source"'))]
    assert "someone/smoothing" in source and "c0ffee" in source and "logs/noise_1.00.tsv" in source
    assert 'href="https://github.com/someone/smoothing"' in source
    assert "import_published_logs" not in page and "/home/me" not in page  # the importer's command line
    protocol = page[page.index('id="protocol"') : page.index("</table>", page.index('id="protocol"'))]
    knobs = page[page.index('id="implementation"') : page.index("</table>", page.index('id="implementation"'))]
    assert "forward_batch" not in protocol and "forward_batch</th><td><code>64" in knobs
    rsbench_run = (site / "runs" / "1.html").read_text()
    knobs = rsbench_run[rsbench_run.index('id="implementation"') :]
    assert "batch_size</th><td><code>100" in knobs and "device</th><td><code>cpu" in knobs
    for label in ('class="x-label"', 'class="y-label"', "correct examples per bin", "([0,1] pixel units)"):
        assert label in page
    # run 5: radii 0.3, 0.9, 1.2, 0.1 in 30 bins up to 1.2: the tallest bar holds one example
    assert '<text class="y-tick" x="62" y="24.0" font-size="11" text-anchor="end">1</text>' in page
    assert "4 are correct (drawn)" in " ".join(page.split())


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
        tables = driver.find_elements("css selector", "#sigma-0\\.50 table.leaderboard")  # one per protocol
        grid = next(t for t in tables if column(t, 0) == ["consistency"])
        first = next(t for t in tables if t is not grid)
        assert len(tables) == 2 and column(first, 0) == ["stability", "gaussian"]  # ranked by ACR
        headers = first.find_elements("css selector", "thead th")
        acr = next(i for i, h in enumerate(headers) if h.text == "ACR")
        # the 95% interval is a second line of the cell; the sort value stays the mean
        assert [t.split("\n")[1] for t in column(first, acr)] == ["[0.5000, 0.5000]", "[0.0000, 0.4764]"]
        assert [t.split("\n")[0].split(" ≈")[0] for t in column(first, acr)] == ["0.5000", "0.2250 ± 0.0707"]
        headers[acr].find_element("css selector", "button").click()
        assert column(first, 0) == ["gaussian", "stability"] and headers[acr].get_attribute("aria-sort") == "ascending"
        headers[acr].find_element("css selector", "button").click()
        assert column(first, 0) == ["stability", "gaussian"] and headers[acr].get_attribute("aria-sort") == "descending"
        at_half = next(i for i, h in enumerate(headers) if h.text == "0.50")  # as text "100.0" < "25.0"
        headers[at_half].find_element("css selector", "button").click()
        assert column(first, 0) == ["gaussian", "stability"]
        assert [t.split("\n")[0].split(" ≈")[0] for t in column(first, at_half)] == ["25.0 ± 0.0", "100.0"]
        marks = driver.find_element("id", "marks").text
        assert "bold" in marks and "≈" in marks and "paired test" in marks
        paper = driver.find_element("css selector", "a.paper")
        assert paper.text == "ICML 2019" and paper.get_attribute("rel") == "noopener noreferrer"
        assert not driver.find_elements("link text", "code")  # its code URL was javascript:
        assert driver.save_screenshot(str(tmp_path / "mnist.png"))
        links = [a.get_attribute("href") for a in driver.find_elements("css selector", "a.run")]
        assert len(links) == 5
        for link in links:
            driver.get(link)
            run_id = Path(link).stem
            assert driver.find_element("css selector", "h1").text.startswith(f"Run {run_id}:")
            assert driver.find_elements("css selector", "svg.histogram rect")
        driver.find_element("id", "submit-link").click()
        assert driver.find_element("css selector", "h1").text == "Submit a result"
        assert "rsbench validate record.json.gz" in driver.find_element("css selector", "main").text
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
