"""The one reader of a task-list page: its forms, its visible text and its tasks.

Any app's page: `parse_forms` (and the `add_form` among them), `texts`, `shows`, `occurrences`,
`new_texts`, `links`, and the tasks read from their delete buttons (`task_ids`, `task_id`), which
is all the checker may assume of a learner's markup. The workshop's own apps also mark each name (`<td class="name">`): `names`.
"""
import html
import re
from html.parser import HTMLParser

DELETE_ACTION = re.compile(r"""action=["'][^"']*?/(\d+)/delete/?["']""")
NAME_CELL = re.compile(r'<td class="name">(.*?)</td>', re.S)


class Form:
    def __init__(self, action, method):
        self.action, self.method = action, method.upper()
        self.fields = {}
        self.texts = []


class FormParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms = []
        self._form = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._form = Form(attrs.get("action") or "", attrs.get("method") or "GET")
            self.forms.append(self._form)
        elif tag in ("input", "button", "textarea") and self._form is not None:
            name = attrs.get("name")
            kind = (attrs.get("type") or "text").lower()
            if name and kind == "hidden":
                self._form.fields[name] = attrs.get("value") or ""
            elif name and kind in ("text", "search") or tag == "textarea":
                self._form.texts.append(name)

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None


def parse_forms(page):
    """The forms of PAGE: action, method, hidden fields and the names of its text fields."""
    parser = FormParser()
    parser.feed(page)
    return parser.forms


def add_form(forms):
    """The form that adds a task: the first POST form with a text field, or None."""
    return next((f for f in forms if f.method == "POST" and f.texts), None)


class TextParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.texts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.append(" ".join(data.split()))


def texts(page):
    """The visible text of PAGE, one string per text node, whitespace collapsed."""
    parser = TextParser()
    parser.feed(page)
    return parser.texts


def shows(page, name):
    return any(name in text for text in texts(page))


def occurrences(page, name):
    return sum(text.count(name) for text in texts(page))


def new_texts(page, baseline):
    """Text on PAGE that BASELINE (the same list seen by a fresh visitor) does not have."""
    seen = set(texts(baseline))
    return [t for t in texts(page) if t not in seen]


LINK = re.compile(r"""<a\s[^>]*?href=["']([^"'#]*)["']""", re.I)


def links(page):
    """The targets of PAGE's links, in order, once each (fragments dropped)."""
    return list(dict.fromkeys(html.unescape(href) for href in LINK.findall(page) if href))


def task_ids(page):
    """The ids of the tasks listed, read from their delete buttons."""
    return [int(i) for i in DELETE_ACTION.findall(page)]


def task_id(page, name):
    """The id of task NAME: the first delete button after its name, as in a table row."""
    at = page.find(html.escape(name, quote=False))
    match = DELETE_ACTION.search(page, at) if at >= 0 else None
    return int(match.group(1)) if match else None


def names(page):
    """The task names a page of the workshop's own apps shows, in order."""
    return [html.unescape(name.strip()) for name in NAME_CELL.findall(page)]
