"""The served page driven in headless Chromium, as a person would use it: type a prompt and the settings,
click Generate, read the samples as the page shows them, take a screenshot. tests/test_serve.py and
scripts/screenshot_page.py run it. Selenium drives Debian's chromium through its chromium-driver (both
found on PATH; nothing is downloaded); `pip install -e '.[test]'` installs Selenium."""

import contextlib
import shutil
from collections.abc import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from charlstm.errors import CharLSTMError

NEWLINE_SHOWN = "\u21b5\n"  # How the page shows a generated newline (as evaluate.py --html does).


def missing() -> str | None:
    """Why no page can be driven here (chromium or chromedriver not on PATH), or None."""
    absent = [name for name in ("chromium", "chromedriver") if not shutil.which(name)]
    return f"{' and '.join(absent)} not found: apt-get install chromium chromium-driver" if absent else None


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 820) -> Iterator[webdriver.Chrome]:
    """A headless Chromium window of width x height CSS pixels, closed after the block."""
    if why := missing():
        raise CharLSTMError(why)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def generate_on_page(driver: webdriver.Chrome, url: str, prompt: str, settings: dict, timeout: float = 60) -> list[str]:
    """Opens the page at `url`, waits out the warm-up, types `prompt` and `settings` ({'seed': 3, ...}, by
    the inputs' ids), clicks Generate and returns each sample's generated text once the stream has ended."""
    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_element(By.ID, "generate").is_enabled())
    for field, value in {"prompt": prompt, **settings}.items():
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value))
    driver.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_element(By.ID, "samples").get_attribute("data-state") in ("done", "error"))
    if driver.find_element(By.ID, "samples").get_attribute("data-state") == "error":
        raise CharLSTMError(f"the page reports: {driver.find_element(By.ID, 'notice').text}")
    texts = driver.find_elements(By.CSS_SELECTOR, ".generated")
    return [element.get_attribute("textContent").replace(NEWLINE_SHOWN, "\n") for element in texts]
