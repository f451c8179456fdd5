"""NVIDIA's real TensorRT Python API, read without TensorRT, and stand-ins held to it.

TensorRT's libraries cannot be installed everywhere the tests run, but NVIDIA's Python bindings wheel
(``tensorrt-cu12-bindings``, import name ``tensorrt_bindings``) can. Its extension module links three
TensorRT libraries (``libnvinfer``, ``libnvonnxparser``, ``libnvinfer_plugin``) and uses only nine of
their C entry points. Three stub libraries that define those nine and do nothing let it import, so
every class, method, property and enum member of that TensorRT version can be listed. Nothing can
be built or run with it: this is the API surface, never behaviour.

* :func:`tensorrt_api` installs the wheel into pytest's cache (once per version), compiles the stubs
  with the system C compiler, imports the bindings in a subprocess and returns the dump as
  :class:`TensorRTApi`.
* :class:`TensorRTStandIns` makes a ``tensorrt`` module from a dump. Its classes have only the
  attributes the real classes have (anything else raises ``AttributeError``), enums only the real
  members, and each call is checked against the signatures in the real docstrings (number of
  arguments, keyword names, and the class of any TensorRT object or enum member passed); a call that
  no overload accepts raises ``TypeError``. Every call is recorded. Results are stand-ins of the
  declared return type unless a test sets them with :meth:`TensorRTStandIns.returns` or
  :meth:`TensorRTStandIns.answers`.

Kept with the tests (not in the package): it needs pytest's cache, pip, a C compiler and network
access to PyPI, and it proves something about the package's code, not something a user runs.

Run as a script (``python tensorrt_api.py dump MODULE``) it prints the dump of MODULE as JSON; the
subprocess started by :func:`tensorrt_api` does exactly that.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "tensorrt-cu12-bindings"
#: The bindings versions every API-surface test runs against (the ``api`` fixture of tests/engines/conftest.py).
VERSIONS = ("11.4.0.106", "10.16.1.11", "10.0.1")
MODULE = "tensorrt_bindings"

#: The C entry points the bindings' extension module imports, by library (the same set for 10.0 to 11.4).
#: They are never called: importing the module only needs them to resolve.
STUB_SOURCES = {
    "libnvinfer": (
        "void *createInferBuilder_INTERNAL(void *logger, int version) { return 0; }\n"
        "void *createInferRuntime_INTERNAL(void *logger, int version) { return 0; }\n"
        "void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return 0; }\n"
        "void *getPluginRegistry(void) { return 0; }\n"
        "void *getBuilderPluginRegistry(int capability) { return 0; }\n"
    ),
    "libnvonnxparser": (
        "void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return 0; }\n"
        "void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return 0; }\n"
        "int getNvOnnxParserVersion(void) { return 0; }\n"
    ),
    "libnvinfer_plugin": "int initLibNvInferPlugins(void *logger, const char *library_namespace) { return 0; }\n",
}

#: Special methods whose presence decides what ``len()``, ``iter()``, ``bytes()``, ``int()``... do.
SPECIAL = (
    "__init__",
    "__len__",
    "__getitem__",
    "__setitem__",
    "__iter__",
    "__contains__",
    "__buffer__",
    "__int__",
    "__index__",
    "__bool__",
    "__eq__",
    "__hash__",
    "__enter__",
    "__exit__",
    "__call__",
)


# -- the dump (runs in the subprocess, next to the real bindings) ----------------------------------
def _signatures(routine: Any, name: str) -> list[str]:
    """The signature lines of a pybind11 routine's docstring (one per overload), or a Python function's."""
    lines = [line.strip() for line in (getattr(routine, "__doc__", None) or "").splitlines()]
    if len(lines) > 1 and lines[0].startswith(f"{name}(*args, **kwargs)") and lines[1] == "Overloaded function.":
        pattern = re.compile(rf"\d+\. ({re.escape(name)}\(.*)$")
        return [match.group(1) for line in lines if (match := pattern.match(line))]
    if lines and lines[0].startswith(f"{name}("):
        return [lines[0]]
    if inspect.isfunction(routine):  # added in Python by the package's __init__
        return [f"{name}{inspect.signature(routine)}"]
    return []  # e.g. pybind11's default __init__ of a class without a constructor


def _property(value: property) -> dict:
    doc = (getattr(value.fget, "__doc__", None) or "").strip().splitlines()
    returns = doc[0].rpartition("->")[2].strip() if doc and "->" in doc[0] else ""
    return {"kind": "property", "readonly": value.fset is None, "returns": returns}


def _is_enum(cls: type) -> bool:
    return isinstance(getattr(cls, "__members__", None), dict)


def _entry(value: Any, name: str, module: str, queue: list[type]) -> dict:
    if isinstance(value, property):
        return _property(value)
    if isinstance(value, type):
        if value.__module__.startswith(module):
            queue.append(value)
        return {"kind": "class", "ref": value.__qualname__}
    if type(value).__module__.startswith(module) and _is_enum(type(value)):
        # the member's key, not value.name: some enums (ErrorCode in 10.0) have a method called name
        key = next(key for key, member in type(value).__members__.items() if int(member) == int(value))
        return {"kind": "enum_member", "enum": type(value).__qualname__, "name": key, "value": int(value)}
    if isinstance(value, staticmethod | classmethod):
        return {"kind": "function", "signatures": _signatures(value.__func__, name)}
    if callable(value):
        return {"kind": "method", "signatures": _signatures(value, name)}
    return {"kind": "value", "repr": repr(value)[:200]}


def dump_module(module_name: str) -> dict:
    """Every public class (with its attributes and special methods), function and constant of a module."""
    module = __import__(module_name)
    queue: list[type] = []
    attributes = {}
    for name in dir(module):
        value = getattr(module, name)
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        entry = _entry(value, name, module_name, queue)
        if entry["kind"] == "method":
            entry["kind"] = "function"
        attributes[name] = entry
    classes: dict[str, dict] = {}
    while queue:
        cls = queue.pop()
        if cls.__qualname__ in classes:
            continue
        mro = [k for k in cls.__mro__ if k.__module__.startswith(module_name)]
        members = {}
        for name in dir(cls):
            if name.startswith("_"):
                continue
            try:
                members[name] = _entry(inspect.getattr_static(cls, name), name, module_name, queue)
            except AttributeError:
                continue
        special = {
            name: _signatures(getattr(cls, name), name)
            for name in SPECIAL
            if any(name in vars(k) and vars(k)[name] is not None for k in mro)
        }
        classes[cls.__qualname__] = {
            "bases": [k.__qualname__ for k in mro],
            "enum": {name: int(value) for name, value in cls.__members__.items()} if _is_enum(cls) else None,
            "attributes": members,
            "special": special,
        }
    return {"module": module_name, "version": module.__version__, "attributes": attributes, "classes": classes}


# -- getting the dump (runs under pytest) ----------------------------------------------------------
def _fail(message: str) -> None:
    import pytest

    pytest.fail(message, pytrace=False)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:12]


def install_bindings(folder: Path, version: str) -> Path:
    """``pip install --no-deps --target`` the bindings wheel into ``folder`` (reused when already there)."""
    target = folder / f"bindings-{version}"
    if (target / MODULE / "__init__.py").is_file():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".bindings-{version}-", dir=folder))
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary", ":all:", "--no-compile"]
    command += ["--disable-pip-version-check", "--quiet", "--target", str(staging), f"{PACKAGE}=={version}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0 or not (staging / MODULE / "__init__.py").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        _fail(f"cannot install {PACKAGE}=={version} with pip: {_last_line(result.stderr or result.stdout)}")
    shutil.rmtree(target, ignore_errors=True)  # a partial copy left by an interrupted run
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def compile_stubs(folder: Path, major: int) -> Path:
    """The three stub libraries with TensorRT ``major``'s sonames (``libnvinfer.so.11``...), compiled once."""
    sources = json.dumps(STUB_SOURCES, sort_keys=True)
    target = folder / f"stubs-{major}-{_digest(sources)}"
    names = [f"{library}.so.{major}" for library in STUB_SOURCES]
    if all((target / name).is_file() for name in names):
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        _fail("the TensorRT API check needs a C compiler (cc or gcc) to build three stub libraries")
    staging = Path(tempfile.mkdtemp(prefix=f".stubs-{major}-", dir=folder))
    for library, source in STUB_SOURCES.items():
        soname = f"{library}.so.{major}"
        (staging / f"{library}.c").write_text(source)
        command = [compiler, "-shared", "-fPIC", "-o", str(staging / soname), f"-Wl,-soname,{soname}"]
        result = subprocess.run(
            [*command, str(staging / f"{library}.c")], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            _fail(f"cannot compile the stub {soname}: {_last_line(result.stderr or result.stdout)}")
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def dump_bindings(bindings: Path, stubs: Path) -> dict:
    """Import the real bindings over the stubs in a subprocess and return :func:`dump_module`'s dump."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(stubs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONPATH"] = str(bindings)
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "dump", MODULE],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        _fail(f"cannot import {MODULE} from {bindings.name} over the stubs: {_last_line(result.stderr)}")
    return json.loads(result.stdout)


def tensorrt_api(cache: Any, version: str) -> TensorRTApi:
    """The API of TensorRT ``version``'s Python bindings; ``cache`` is pytest's ``request.config.cache``.

    The wheel, the stubs and the dump are kept in the cache folder (the dump keyed by this file's
    contents too, so a change here redoes it).
    """
    folder = Path(cache.mkdir("tensorrt-api"))
    dumped = folder / f"api-{version}-{_digest(Path(__file__).read_bytes())}.json"
    if not dumped.is_file():
        bindings = install_bindings(folder, version)
        stubs = compile_stubs(folder, int(version.split(".")[0]))
        data = dump_bindings(bindings, stubs)
        if data["version"] != version:
            _fail(f"{PACKAGE}=={version} installed TensorRT {data['version']}")
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as tmp:
            json.dump(data, tmp)
        os.replace(tmp.name, dumped)
        for stale in folder.glob(f"api-{version}-*.json"):  # dumps made by an earlier version of this file
            if stale != dumped:
                stale.unlink(missing_ok=True)
    return TensorRTApi(json.loads(dumped.read_text()))


# -- signatures ------------------------------------------------------------------------------------
_OPEN, _CLOSE = "([{<", ")]}>"


def _split_top(text: str, separator: str = ",") -> list[str]:
    """Split at ``separator`` outside brackets (defaults such as ``<Severity.WARNING: 2>`` included)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str
    has_default: bool
    kind: str  # "positional" (positional only), "either", "keyword" (keyword only), "*" or "**"


@dataclass(frozen=True)
class Signature:
    """One overload, parsed from ``name(self: tensorrt.X, arg: type = default, ...) -> T``."""

    text: str
    params: tuple[Param, ...]
    returns: str

    @classmethod
    def parse(cls, text: str, *, bound: bool) -> Signature:
        start, depth = text.index("("), 0
        for end in range(start, len(text)):
            depth += (text[end] in _OPEN) - (text[end] in _CLOSE)
            if depth == 0:
                break
        returns = text[end + 1 :].strip().removeprefix("->").strip()
        params: list[Param] = []
        keyword_only = False
        for part in _split_top(text[start + 1 : end]):
            if part == "/":
                params = [Param(p.name, p.annotation, p.has_default, "positional") for p in params]
                continue
            if part == "*":
                keyword_only = True
                continue
            head, _, default = part.partition("=")
            name, _, annotation = head.partition(":")
            name, annotation = name.strip(), annotation.strip()
            if name.startswith("**"):
                params.append(Param(name[2:], annotation, True, "**"))
            elif name.startswith("*"):
                params.append(Param(name[1:], annotation, True, "*"))
                keyword_only = True
            else:
                # pybind11 names unnamed arguments arg0, arg1...: those cannot be passed by keyword
                kind = "keyword" if keyword_only else "positional" if re.fullmatch(r"arg\d+", name) else "either"
                params.append(Param(name, annotation, bool(default.strip()), kind))
        if bound and params and params[0].kind in ("positional", "either"):
            params = params[1:]  # self
        return cls(text, tuple(params), returns)

    def bind(self, args: tuple, kwargs: dict) -> dict[str, tuple[Param, Any]]:
        """``{name: (param, value)}`` as Python would bind the call, or ``TypeError`` saying why not."""
        positional = [p for p in self.params if p.kind in ("positional", "either")]
        if len(args) > len(positional) and not any(p.kind == "*" for p in self.params):
            raise TypeError(f"takes {len(positional)} positional argument(s), {len(args)} given")
        bound = {p.name: (p, value) for p, value in zip(positional, args, strict=False)}
        by_name = {p.name: p for p in self.params if p.kind in ("either", "keyword")}
        var_keyword = next((p for p in self.params if p.kind == "**"), None)
        for name, value in kwargs.items():
            if name in bound:
                raise TypeError(f"got multiple values for {name!r}")
            if name not in by_name and var_keyword is None:
                raise TypeError(f"got an unexpected keyword argument {name!r}")
            bound[name] = (by_name.get(name) or var_keyword, value)
        missing = [
            p.name
            for p in self.params
            if p.kind in ("positional", "either", "keyword") and not p.has_default and p.name not in bound
        ]
        if missing:
            raise TypeError(f"missing argument(s) {', '.join(missing)}")
        return bound


# -- the API ---------------------------------------------------------------------------------------
@dataclass
class ClassSpec:
    name: str
    bases: list[str]
    enum: dict[str, int] | None
    attributes: dict[str, dict]
    special: dict[str, list[str]]

    def signatures(self, attribute: str) -> list[Signature]:
        texts = self.special[attribute] if attribute in SPECIAL else self.attributes[attribute]["signatures"]
        bound = attribute in SPECIAL or self.attributes[attribute]["kind"] == "method"
        return [Signature.parse(text, bound=bound) for text in texts]

    @property
    def methods(self) -> set[str]:
        return {name for name, entry in self.attributes.items() if entry["kind"] in ("method", "function")}

    @property
    def properties(self) -> set[str]:
        return {name for name, entry in self.attributes.items() if entry["kind"] == "property"}


_TRT_NAME = re.compile(r"(?:\w+\.)*?tensorrt\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


@dataclass
class TensorRTApi:
    data: dict
    classes: dict[str, ClassSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = {name: ClassSpec(name, **spec) for name, spec in self.data["classes"].items()}

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def module(self) -> dict[str, dict]:
        return self.data["attributes"]

    def type_named(self, annotation: str) -> ClassSpec | None:
        """The TensorRT class an annotation names (``tensorrt_bindings.tensorrt.X``, ``X | None``...), if any."""
        for part in re.split(r"\s*\|\s*", annotation.strip()):
            part = re.sub(r"^(?:typing\.)?Optional\[(.*)\]$", r"\1", part)
            if (match := _TRT_NAME.fullmatch(part)) and match.group(1) in self.classes:
                return self.classes[match.group(1)]
            if match := re.fullmatch(r"\w+::(I?)(\w+)", part):  # a C++ name: nvonnxparser::IParserError -> ParserError
                return self.classes.get(match.group(1) + match.group(2)) or self.classes.get(match.group(2))
        return None


# -- the stand-ins ---------------------------------------------------------------------------------
@dataclass
class Call:
    """One recorded call: ``target`` is ``Class.method``, ``Class`` for a constructor, ``Class.prop=`` for a set."""

    target: str
    args: tuple
    kwargs: dict
    receiver: Any
    result: Any


class StandInClass:
    """A TensorRT class (or enum) of the fake module: callable, with its real class attributes only."""

    __slots__ = ("_fake", "_spec")

    def __init__(self, fake: TensorRTStandIns, spec: ClassSpec) -> None:
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_spec", spec)

    def __getattr__(self, name: str) -> Any:
        spec = self._spec
        if name == "__members__" and spec.enum is not None:
            return {member: self._fake.member(spec.name, member) for member in spec.enum}
        if name.startswith("__") or name not in spec.attributes:
            raise self._fake.missing_attribute(f"tensorrt.{spec.name}", name)
        entry = spec.attributes[name]
        if entry["kind"] in ("method", "function"):
            return _Callable(self._fake, spec, name, None)
        return self._fake.resolve(entry, f"tensorrt.{spec.name}", name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the stand-in of tensorrt.{self._spec.name} is read-only (cannot set {name})")

    def __call__(self, *args: Any, **kwargs: Any) -> StandIn:
        spec = self._spec
        if not spec.special.get("__init__"):
            self._fake.violation(f"tensorrt.{spec.name}: No constructor defined!")
        self._fake.check_call(spec.name, spec.signatures("__init__"), args, kwargs)
        made = self._fake.new(spec.name, args[0] if args else None)
        self._fake.calls.append(Call(spec.name, args, kwargs, None, made))
        return made

    def __instancecheck__(self, instance: Any) -> bool:
        return isinstance(instance, StandIn) and self._spec.name in instance._spec.bases

    def __repr__(self) -> str:
        return f"<class 'tensorrt.{self._spec.name}' (stand-in, TensorRT {self._fake.api.version})>"


class StandIn:
    """An instance of a TensorRT class (an enum member included): its real attributes and special methods only."""

    __slots__ = ("_fake", "_payload", "_spec", "_values")

    def __init__(self, fake: TensorRTStandIns, spec: ClassSpec, payload: Any = None) -> None:
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_payload", payload)
        object.__setattr__(self, "_values", {})

    @property
    def _label(self) -> str:
        spec = self._spec
        if spec.enum is not None:
            return next((name for name, value in spec.enum.items() if value == self._payload), str(self._payload))
        return ""

    def __getattr__(self, name: str) -> Any:
        spec, fake = self._spec, self._fake
        if name.startswith("__") or name not in spec.attributes:
            raise fake.missing_attribute(f"tensorrt.{spec.name}", name)
        entry = spec.attributes[name]
        if entry["kind"] == "method":
            return _Callable(fake, spec, name, self)
        if entry["kind"] == "function":
            return _Callable(fake, spec, name, None)
        if entry["kind"] != "property":
            return fake.resolve(entry, f"tensorrt.{spec.name}", name)
        if spec.enum is not None and name in ("name", "value"):
            return self._label if name == "name" else self._payload
        if name in self._values:
            return self._values[name]
        return fake.respond(f"{spec.name}.{name}", self, (), {}, entry["returns"])

    def __setattr__(self, name: str, value: Any) -> None:
        spec, fake = self._spec, self._fake
        entry = spec.attributes.get(name)
        if entry is None or entry["kind"] != "property":
            raise fake.missing_attribute(f"tensorrt.{spec.name}", name)
        if entry["readonly"]:
            fake.violation(f"tensorrt.{spec.name}.{name} is read-only in TensorRT {fake.api.version}", AttributeError)
        expected = fake.api.type_named(entry["returns"])
        if expected is not None and isinstance(value, StandIn) and expected.name not in value._spec.bases:
            fake.violation(f"tensorrt.{spec.name}.{name} takes {expected.name}, not {value._spec.name}")
        self._values[name] = value
        fake.calls.append(Call(f"{spec.name}.{name}=", (value,), {}, self, None))

    def _special(self, name: str, error: str) -> None:
        if name not in self._spec.special:
            raise TypeError(error.format(f"tensorrt.{self._spec.name}"))

    def __len__(self) -> int:
        self._special("__len__", "object of type '{}' has no len()")
        return len(self._payload)

    def __getitem__(self, key: Any) -> Any:
        self._special("__getitem__", "'{}' object is not subscriptable")
        return self._payload[key]

    def __iter__(self) -> Iterator[Any]:
        if "__iter__" not in self._spec.special:
            self._special("__getitem__", "'{}' object is not iterable")
        return iter(self._payload)

    def __buffer__(self, flags: int) -> memoryview:
        self._special("__buffer__", "a bytes-like object is required, not '{}'")
        return memoryview(self._payload)

    def __int__(self) -> int:
        self._special("__int__", "int() argument must be a number, not '{}'")
        return int(self._payload)

    def __index__(self) -> int:
        self._special("__index__", "'{}' object cannot be interpreted as an integer")
        return int(self._payload)

    def __bool__(self) -> bool:
        if "__bool__" in self._spec.special:
            return self._payload is None or bool(self._payload)
        return len(self._payload) > 0 if "__len__" in self._spec.special else True

    def __eq__(self, other: object) -> bool:
        if "__eq__" not in self._spec.special:
            return self is other
        if isinstance(other, StandIn):
            return other._spec is self._spec and other._payload == self._payload
        return self._spec.enum is None and self._payload == other

    def __hash__(self) -> int:
        if "__hash__" not in self._spec.special:
            return id(self)
        return hash((self._spec.name, self._payload if self._spec.enum is not None else id(self)))

    def __repr__(self) -> str:
        if self._spec.enum is not None:
            return f"<{self._spec.name.rpartition('.')[2]}.{self._label}: {self._payload}>"
        shown = "" if self._payload is None else f" {self._payload!r}"
        return f"<tensorrt.{self._spec.name} stand-in{shown}>"

    def __str__(self) -> str:
        if self._spec.enum is not None:
            return f"{self._spec.name.rpartition('.')[2]}.{self._label}"
        return repr(self)


class _Callable:
    """A method (bound to a stand-in or not), a static method or a module function, checked on each call."""

    __slots__ = ("_fake", "_name", "_owner", "_receiver")

    def __init__(self, fake: TensorRTStandIns, owner: ClassSpec | None, name: str, receiver: StandIn | None) -> None:
        self._fake, self._owner, self._name, self._receiver = fake, owner, name, receiver

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fake, owner, name = self._fake, self._owner, self._name
        if owner is None:
            target = f"tensorrt.{name}"
            signatures = [Signature.parse(text, bound=False) for text in fake.api.module[name]["signatures"]]
        else:
            target = f"{owner.name}.{name}"
            signatures = owner.signatures(name)
            if self._receiver is None and owner.attributes[name]["kind"] == "method":  # Class.method(instance, ...)
                signatures = [Signature.parse(s.text, bound=False) for s in signatures]
        signature = fake.check_call(target, signatures, args, kwargs)
        result = fake.respond(target, self._receiver, args, kwargs, signature.returns)
        fake.calls.append(Call(target, args, kwargs, self._receiver, result))
        return result

    def __repr__(self) -> str:
        return f"<stand-in of tensorrt.{self._owner.name + '.' if self._owner else ''}{self._name}>"


class _FakeModule(types.ModuleType):
    """The ``tensorrt`` module: ``__version__`` and the real module's public names, nothing else."""

    def __init__(self, fake: TensorRTStandIns) -> None:
        super().__init__("tensorrt", f"Stand-in of TensorRT {fake.api.version}'s Python API (API surface only).")
        self.__dict__["_fake"] = fake
        self.__version__ = fake.api.version

    def __getattr__(self, name: str) -> Any:
        fake = self.__dict__["_fake"]
        if name.startswith("__") or name not in fake.api.module:
            raise fake.missing_attribute("tensorrt", name)
        entry = fake.api.module[name]
        if entry["kind"] == "function":
            return _Callable(fake, None, name, None)
        return fake.resolve(entry, "tensorrt", name)


@dataclass
class TensorRTStandIns:
    """Stand-ins for one TensorRT version: ``module`` goes into ``sys.modules['tensorrt']``.

    ``calls`` records every call and property set; ``violations`` every call no real overload
    accepts (also raised as ``TypeError``, so code that swallows errors cannot hide one);
    ``missing`` every attribute asked for that this version lacks (raised as ``AttributeError``, which
    ``hasattr``/``getattr(..., default)`` may legitimately swallow).
    """

    api: TensorRTApi
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    _responses: dict[str, Callable[..., Any]] = field(default_factory=dict)
    _classes: dict[str, StandInClass] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.module = _FakeModule(self)

    # what tests use
    def returns(self, target: str, value: Any) -> None:
        """``Class.method`` or ``Class.property`` gives ``value`` from now on."""
        self.answers(target, lambda receiver, *args, **kwargs: value)

    def answers(self, target: str, function: Callable[..., Any]) -> None:
        """``Class.method`` or ``Class.property`` gives ``function(receiver, *args, **kwargs)`` from now on."""
        owner, _, attribute = target.rpartition(".")
        spec = self.api.classes.get(owner)
        if spec is None or attribute not in spec.attributes:
            raise KeyError(f"TensorRT {self.api.version} has no {target}: nothing to answer")
        self._responses[target] = function

    def new(self, class_name: str, payload: Any = None) -> StandIn:
        """A stand-in instance of ``class_name`` holding ``payload`` (a shape for Dims, bytes for IHostMemory)."""
        return StandIn(self, self.api.classes[class_name], payload)

    def cls(self, class_name: str) -> StandInClass:
        if class_name not in self._classes:
            self._classes[class_name] = StandInClass(self, self.api.classes[class_name])
        return self._classes[class_name]

    def member(self, enum: str, name: str) -> StandIn:
        return self.new(enum, self.api.classes[enum].enum[name])

    def calls_to(self, target: str) -> list[Call]:
        return [call for call in self.calls if call.target == target]

    # what the stand-ins use
    def missing_attribute(self, owner: str, name: str) -> AttributeError:
        self.missing.append(f"{owner}.{name}")
        return AttributeError(f"TensorRT {self.api.version}: {owner} has no attribute {name!r}")

    def violation(self, message: str, error: type[Exception] = TypeError) -> None:
        self.violations.append(message)
        raise error(message)

    def resolve(self, entry: dict, owner: str, name: str) -> Any:
        kind = entry["kind"]
        if kind == "class":
            return self.cls(entry["ref"])
        if kind == "enum_member":
            return self.member(entry["enum"], entry["name"])
        if kind == "value":
            return entry["repr"]
        raise self.missing_attribute(owner, name)  # a property read on the class itself

    def check_call(self, target: str, signatures: list[Signature], args: tuple, kwargs: dict) -> Signature:
        """The first overload that accepts the call (count, keywords, TensorRT classes and enums), else TypeError."""
        reasons = []
        for signature in signatures:
            try:
                bound = signature.bind(args, kwargs)
                for name, (param, value) in bound.items():
                    expected = self.api.type_named(param.annotation)
                    if expected is not None and isinstance(value, StandIn) and expected.name not in value._spec.bases:
                        raise TypeError(f"{name} must be {expected.name}, not {value._spec.name}")
            except TypeError as err:
                reasons.append(f"{signature.text}: {err}")
                continue
            return signature
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        self.violation(
            f"TensorRT {self.api.version}: no overload of {target} accepts ({shown}): "
            + ("; ".join(reasons) or "no signature")
        )
        raise AssertionError("unreachable")

    def respond(self, target: str, receiver: Any, args: tuple, kwargs: dict, returns: str) -> Any:
        if target in self._responses:
            return self._responses[target](receiver, *args, **kwargs)
        return self.default(returns)

    def default(self, annotation: str) -> Any:
        """A plausible value of a declared type: a fresh stand-in for a TensorRT class, its first member for an enum."""
        spec = self.api.type_named(annotation)
        if spec is not None:
            if spec.enum is not None:
                return self.new(spec.name, min(spec.enum.values()))
            return self.new(spec.name)
        simple = {"bool": True, "int": 0, "typing.SupportsInt": 0, "float": 0.0, "str": "", "bytes": b""}
        if annotation in simple:
            return simple[annotation]
        if annotation.startswith("list["):
            return []
        return None


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "dump":
        sys.exit(f"usage: {sys.argv[0]} dump MODULE")
    json.dump(dump_module(sys.argv[2]), sys.stdout)
