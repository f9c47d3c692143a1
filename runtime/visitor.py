"""A visitor of an app: its own cookies, and forms submitted the way a browser submits them.

A form's hidden inputs (a CSRF token, for one) are sent along with the fields you give, so the
same code drives the steps, which have no CSRF protection, and final/, which has.
"""
from urllib.parse import urljoin

import requests

from runtime.taskpage import add_form, parse_forms


class Visitor:
    """One browser-like visitor of BASE_URL."""

    def __init__(self, base_url, timeout=15):
        self.base_url = base_url.rstrip("/") + "/"
        self.http = requests.Session()
        self.timeout = timeout
        self.page = None

    def url(self, path):
        return urljoin(self.base_url, path.lstrip("/"))

    def get(self, path="/", **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        self.page = self.http.get(self.url(path), **kwargs)
        return self.page

    def post(self, path, data=None, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return self.http.post(self.url(path), data=data, **kwargs)

    def forms(self, path="/"):
        """The forms on PATH, each with its absolute action."""
        page = self.get(path)
        forms = parse_forms(page.text)
        for form in forms:
            form.action = urljoin(page.url, form.action)
        return forms

    def submit(self, form, values=None, follow=True):
        data = dict(form.fields)
        data.update(values or {})
        return self.http.request(form.method, form.action, data=data, timeout=self.timeout,
                                 allow_redirects=follow)

    def add_form(self, path="/"):
        """The form on PATH that adds a task."""
        form = add_form(self.forms(path))
        if form is None:
            raise AssertionError(f"no form with a text field on {path}")
        return form

    def add_task(self, name, path="/", follow=True):
        """Fill in the add form's text field with NAME and submit it."""
        form = self.add_form(path)
        return self.submit(form, {form.texts[0]: name}, follow=follow)

    def delete_forms(self, path="/"):
        return [f for f in self.forms(path) if f.method == "POST" and "delete" in f.action]

    def delete_task(self, task_id, path="/", follow=True):
        """Press the delete button of task TASK_ID, as shown on PATH."""
        for form in self.delete_forms(path):
            if f"/{task_id}/delete" in form.action:
                return self.submit(form, follow=follow)
        raise AssertionError(f"no delete button for task {task_id} on {path}")
