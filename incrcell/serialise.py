"""Turning cell values into bytes and back.

Values are pickled with protocol 5 so that large buffers (numpy arrays,
pandas blocks) travel out of band: ``dumps`` returns zero-copy views of the
objects' own memory and the store writes them straight to disk; ``loads``
rebuilds the objects on top of the buffers it is given, again without copies.

Everything goes through the C pickler, which pickles functions and classes
*by reference* (``__main__.f``). That is wrong for code defined in the
notebook: after a kernel restart ``__main__.f`` is whatever ``f`` means then,
or nothing, so a restored value would silently use a stale definition (or
fail). So each notebook function or class (and each lambda or local
function, which no import can find) is pickled *by value* with dill, as a
small nested blob inside the C pickler's stream. Only the code goes through
dill: the data around it (a million instances of a notebook dataclass, say)
stays on the C pickler, which is some 25 times faster than dill's pure-Python
one; and each function or class is pickled once per value, however many
instances refer to it.

What a restored notebook function sees as its globals:

* A function whose globals are the notebook namespace (``sys.modules
  ["__main__"].__dict__``, which is the case in IPython) is bound to the
  *loading* process's ``__main__`` namespace, exactly like the original
  function was bound to the namespace it was defined in. It therefore sees
  the globals that the engine restores (or that later cells assign), never a
  private snapshot. Calling it before the globals it reads exist raises
  NameError, as it would have in the original session.
* A function whose globals are some other, non-module dict (code ``exec``'d
  in a private namespace) carries a copy of just the globals it references.

dill is only used for notebook code, not to pickle more kinds of things:
what the C pickler refuses (locks, open files, generators, ...) is
:class:`Unpicklable`, also inside code pickled by dill, whose own reducers
would otherwise "restore" an open file by reopening it by name (mode ``"w"``
truncates it) or a lock as a new, unrelated lock.

Identity: a notebook function or class that the notebook namespace binds
under its own name (``class C`` defined in a cell, still called ``C``) is
pickled *by reference to that name*, and resolved on load through the
``resolve`` callable the engine gives :func:`loads`: an instance restored
from one cell and its class restored from another are then the same class
object, and ``isinstance`` works as in the original session.  The engine
makes that sound by keying the restore on the content of every notebook
definition the value refers to (see ``Entry.requires``).  Code the namespace
no longer binds under its name (a class since redefined) goes by value, as
above.  Within one value, shared objects stay shared.
"""

from __future__ import annotations

import _thread
import contextvars
import importlib
import io
import pickle
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dill

from .analysis import notebook_definition
from .fingerprint import array_bases, array_owner, byte_bounds

PROTOCOL = 5

# Resources dill would fabricate anew on load; the C pickler refuses them too.
_RESOURCES = (
    _thread.LockType,
    _thread.RLock,
    io.IOBase,
    weakref.ReferenceType,
    weakref.ProxyType,
    weakref.CallableProxyType,
)
_VALUE_IO = (io.BytesIO, io.StringIO)  # plain in-memory data, picklable by value


class Unpicklable(Exception):
    """The value cannot be serialised; the cell simply isn't cached.

    ``reason`` is one line of human text, e.g. "cannot pickle '_thread.lock' object".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Shared(Unpicklable):
    """A value contains (or views) an object found inside a value that is not stored with it.

    Pickling would copy the object, and a restore would quietly break the
    sharing a plain run has.  ``name`` names the value the object lies in.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"it shares objects with `{name}`")
        self.name = name


@dataclass
class Serialised:
    """A pickled value: the in-band stream plus its out-of-band buffers.

    The buffers are views of the live objects' memory, not copies: write (and
    hash) them before any more user code can mutate those objects.
    """

    method: str  # how ``loads`` must read the stream; "pickle" is the only method so far
    stream: bytes
    buffers: list[memoryview]

    @property
    def nbytes(self) -> int:
        """Total size of stream and buffers."""
        return len(self.stream) + sum(buffer.nbytes for buffer in self.buffers)


def _is_code_by_value(obj: object) -> bool:
    """True for functions and classes that only exist as notebook source.

    Those are defined in ``__main__`` or are local/lambda functions, which no
    import can find again, so they must be pickled by value.
    """
    if not isinstance(obj, (type, types.FunctionType)):
        return False
    qualname = obj.__qualname__
    return (
        getattr(obj, "__module__", None) == "__main__"
        or "<locals>" in qualname
        or "<lambda>" in qualname
    )


def _is_ndarray(cls: type) -> bool:
    """``cls`` is exactly numpy's ndarray (checked by name: numpy need not be imported)."""
    return cls.__name__ == "ndarray" and cls.__module__ == "numpy"


class _Dispatch(dict):
    """dill's dispatch table, minus dill's reducer for numpy arrays.

    That reducer pickles arrays in band (a full copy); without it an array
    held by notebook code reduces to a PickleBuffer and goes out of band.
    """

    def get(self, cls: type, default: object = None) -> object:
        if _is_ndarray(cls):
            return default
        return dill.Pickler.dispatch.get(cls, default)


class _DillPickler(dill.Pickler):
    """dill, pickling one notebook function or class by value, never by reference."""

    dispatch = _Dispatch()

    def __init__(
        self,
        file: io.BytesIO,
        buffer_callback: Callable[[pickle.PickleBuffer], None],
        root: object,
        own: frozenset[int],
    ) -> None:
        # Explicit options: the user's global dill.settings must not change what we write.
        super().__init__(
            file, PROTOCOL, buffer_callback=buffer_callback, byref=False, recurse=False
        )
        # dill remembers the __main__ of the moment it was imported; IPython replaces it later.
        self._main = sys.modules["__main__"]
        self._root = root
        self._own = own

    def reducer_override(self, obj: object) -> object:
        # Another notebook definition the namespace binds (a base class, a function a
        # method calls) is referred to by name, as the outer pickler does: a copy of it
        # would not be the class the namespace means (``issubclass`` fails).
        if obj is not self._root and id(obj) not in self._own and _is_code_by_value(obj):
            name = notebook_definition(obj)
            if name is not None:
                return _main_reference, (name,)
        return NotImplemented

    def save(self, obj: object, save_persistent_id: bool = True) -> None:
        if isinstance(obj, _RESOURCES) and not isinstance(obj, _VALUE_IO):
            raise pickle.PicklingError(f"cannot pickle {_type_name(obj)!r} object")
        if type(obj) is types.FunctionType:
            # Bound to a module's namespace (the notebook's included): refer to that
            # namespace. Any other globals dict: carry the globals the function uses.
            module = sys.modules.get(obj.__module__)
            self._recurse = obj.__globals__ is not getattr(module, "__dict__", None)
        super().save(obj, save_persistent_id)


class _DillUnpickler(dill.Unpickler):
    """dill's unpickler, resolving the notebook namespace at load time."""

    def __init__(self, file: io.BytesIO, buffers: Sequence[memoryview]) -> None:
        # ignore=True: dill would otherwise swap the class of a loaded __main__
        # instance for whatever class of that *name* the loading __main__ holds.
        super().__init__(file, buffers=buffers, ignore=True)
        self._main = sys.modules["__main__"]


def _code_by_value(
    obj: type | types.FunctionType, own: frozenset[int]
) -> tuple[Callable[..., object], tuple[object, ...]]:
    """A reduction that rebuilds ``obj`` from a dill pickle of its definition.

    Buffers inside it (say a closure over an array) become arguments, so that
    the outer pickler passes them out of band too.
    """
    buffers: list[pickle.PickleBuffer] = []
    file = io.BytesIO()
    with warnings.catch_warnings():
        # dill warns, then pickles by reference, when it can't pickle a class
        # by value (e.g. an Enum): the stale-definition bug again.
        warnings.simplefilter("error", dill.PicklingWarning)
        _DillPickler(file, buffers.append, obj, own).dump(obj)
    return _load_code, (file.getvalue(), *buffers)


def _load_code(blob: bytes, *buffers: memoryview) -> object:
    """Rebuild a function or class pickled by :func:`_code_by_value`."""
    return _DillUnpickler(io.BytesIO(blob), buffers).load()


# How a load resolves a notebook name (see _main_reference); None: the live __main__.
_RESOLVER: contextvars.ContextVar[Callable[[str], object] | None] = contextvars.ContextVar(
    "incrcell_resolver", default=None
)


def _main_reference(name: str) -> object:
    """Rebuild a reference to notebook code pickled by name (see ``notebook_definition``)."""
    resolve = _RESOLVER.get()
    if resolve is not None:
        return resolve(name)
    try:
        return getattr(sys.modules["__main__"], name)
    except AttributeError:
        raise pickle.UnpicklingError(f"the notebook does not define `{name}`") from None


class _Pickler(pickle.Pickler):
    """The C pickler, pickling notebook code by name or by value, and modules by name.

    ``own`` holds the ids of the values being stored together: a notebook
    definition among them is stored by value (the load creates it), any other
    by reference to its name.  A numpy array that views the memory of another
    array stored here (or referred to by name, see :class:`_RefPickler`) is
    stored as that view, so writes through one stay visible through the other.
    """

    def __init__(
        self,
        file: io.BytesIO,
        own: frozenset[int],
        anchors: dict[int, list[Any]],
        buffer_callback: Callable[[pickle.PickleBuffer], None],
    ) -> None:
        super().__init__(file, PROTOCOL, buffer_callback=buffer_callback)
        self._own = own
        self._anchors = anchors  # id of the memory's owner -> arrays stored (or referred to)

    def reducer_override(self, obj: Any) -> str | tuple[Any, ...]:
        if _is_code_by_value(obj):
            if id(obj) not in self._own and notebook_definition(obj):
                return _main_reference, (obj.__qualname__,)
            return _code_by_value(obj, self._own)
        cls = type(obj)
        if _is_code_by_value(cls):
            reduced = obj.__reduce_ex__(PROTOCOL)
            if isinstance(reduced, str):  # "the global called ...": a reference into __main__
                raise pickle.PicklingError(f"{_type_name(obj)} would be pickled by reference")
            return reduced
        if isinstance(obj, types.ModuleType) and sys.modules.get(obj.__name__) is obj:
            # A module is its import name; the C pickler can't pickle modules at all.
            return importlib.import_module, (obj.__name__,)
        if _is_ndarray(cls) and obj.base is not None:
            return _view_reduction(obj, self._anchors) or NotImplemented
        return NotImplemented


class _RefPickler(_Pickler):
    """A :class:`_Pickler` that stores the objects in ``refs`` (id -> name) as
    references to the notebook names bound to them, resolved on load, and
    raises :class:`Shared` on meeting an object of ``inside`` (id -> name of
    the value it lies in), which no name refers to.

    Only used when a stored value does contain such objects: ``persistent_id``
    costs a Python call for every object pickled.
    """

    def __init__(
        self,
        file: io.BytesIO,
        own: frozenset[int],
        anchors: dict[int, list[Any]],
        refs: Mapping[int, str],
        inside: Mapping[int, str],
        buffer_callback: Callable[[pickle.PickleBuffer], None],
    ) -> None:
        super().__init__(file, own, anchors, buffer_callback)
        self._refs = refs
        self._inside = inside

    def persistent_id(self, obj: object) -> str | None:
        name = self._refs.get(id(obj))
        if name is None and id(obj) in self._inside:
            raise Shared(self._inside[id(obj)])
        return name

    def reducer_override(self, obj: Any) -> str | tuple[Any, ...]:
        if _is_ndarray(type(obj)) and obj.base is not None:
            for base in map(id, array_bases(obj)):
                if base in self._refs:
                    break
                if base in self._inside:
                    raise Shared(self._inside[base])
        return super().reducer_override(obj)


def _view_reduction(view: Any, anchors: dict[int, list[Any]]) -> tuple[object, ...] | None:
    """``view`` as a view of an array stored too (or None if it shares no stored memory).

    numpy points ``view.base`` at the array owning the memory, so the anchor
    is found by owner: a stored array viewing the same memory, contiguous (so
    that, stored by value, it comes back with the same layout and the view's
    byte offset and strides still mean the same elements) and spanning every
    byte the view covers; or, if the view itself could be theirs, by value.  A view
    sharing memory with stored arrays of which none qualifies cannot stay shared: it
    is refused rather than copied.
    """
    candidates = [a for a in anchors.get(id(array_owner(view)), ()) if a is not view]
    if not candidates:
        return None
    low, high = byte_bounds(view)
    for anchor in candidates:
        start, end = byte_bounds(anchor)
        if (
            (anchor.flags.c_contiguous or anchor.flags.f_contiguous)
            and start <= low
            and high <= end
        ):
            offset = view.__array_interface__["data"][0] - anchor.__array_interface__["data"][0]
            return _load_view, (
                anchor,
                offset,
                view.shape,
                view.strides,
                view.dtype,
                view.flags.writeable,
                anchor.strides,
            )
    if (view.flags.c_contiguous or view.flags.f_contiguous) and all(
        low <= start and end <= high for start, end in map(byte_bounds, candidates)
    ):
        # the view is the anchor of the others (``m`` restored, viewing an unnamed buffer,
        # and ``col = m[:, 1]``): stored by value, they are stored as views of it
        return None
    raise pickle.PicklingError(
        "an array view shares memory with another stored array "
        "in a way that cannot be stored shared"
    )


def _load_view(
    anchor: Any,
    offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: Any,
    writeable: bool,
    anchor_strides: tuple[int, ...],
) -> Any:
    """Rebuild an array view on ``anchor``'s memory (see :func:`_view_reduction`)."""
    if anchor.strides != anchor_strides:
        raise pickle.UnpicklingError("the array a view refers to has another layout now")
    owner = array_owner(anchor)
    if not (owner.flags.c_contiguous or owner.flags.f_contiguous):
        raise pickle.UnpicklingError("the array a view refers to is not contiguous")
    start = anchor.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    ndarray = sys.modules["numpy"].ndarray
    view = ndarray(
        shape,
        dtype,
        buffer=owner.reshape(-1, order="A").view("u1"),
        offset=start + offset,
        strides=strides,
    )
    view.flags.writeable = writeable and anchor.flags.writeable
    return view


class _Unpickler(pickle.Unpickler):
    """Resolves the references :class:`_RefPickler` wrote, like notebook code by name."""

    def persistent_load(self, pid: object) -> object:
        if not isinstance(pid, str):
            raise pickle.UnpicklingError("unsupported persistent reference")
        return _main_reference(pid)


def _type_name(obj: object) -> str:
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def one_line(exc: BaseException) -> str:
    """``exc`` as one short line of text, for reasons shown to the user."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:199] + "…"


def dumps(
    obj: object,
    *,
    own: Iterable[object] = (),
    refs: Mapping[str, object] | None = None,
    inside: Mapping[int, str] | None = None,
) -> Serialised:
    """Serialise ``obj``; raises :class:`Unpicklable` if it can't be.

    ``own``: the values stored together in ``obj`` (by default ``obj`` itself);
    notebook definitions among them go by value.  ``refs`` maps notebook names
    to the objects bound to them that must be stored as references to those
    names, so that a load shares them with the namespace instead of copying;
    meeting an object of ``inside`` raises :class:`Shared`.  Everything is built in
    memory, so a failure leaves nothing behind.
    """
    buffers: list[memoryview] = []
    file = io.BytesIO()
    own = [*own, obj]
    owned = frozenset(map(id, own))
    by_id = {id(value): name for name, value in (refs or {}).items()}
    anchors: dict[int, list[Any]] = {}
    for value in [*own, *(refs or {}).values()]:
        if _is_ndarray(type(value)):
            anchors.setdefault(id(array_owner(value)), []).append(value)

    def keep(buffer: pickle.PickleBuffer) -> None:
        buffers.append(buffer.raw())

    try:
        if refs or inside:
            _RefPickler(file, owned, anchors, by_id, inside or {}, buffer_callback=keep).dump(obj)
        else:
            _Pickler(file, owned, anchors, buffer_callback=keep).dump(obj)
    except Shared:
        raise
    except Exception as exc:  # any failure of a reducer means: not cacheable
        raise Unpicklable(one_line(exc)) from None
    return Serialised("pickle", file.getvalue(), buffers)


def loads(
    method: str,
    stream: bytes | memoryview,
    buffers: Sequence[memoryview],
    resolve: Callable[[str], object] | None = None,
) -> object:
    """Rebuild a value from what :func:`dumps` produced.

    Objects are built on top of ``buffers`` without copying: a writeable
    buffer gives a writeable numpy array, a read-only one a read-only array.
    ``resolve(name)`` supplies notebook code pickled by name (default: the
    live ``__main__``).  Unpickling runs code: only call this on authenticated bytes.
    """
    if method != "pickle":
        raise ValueError(f"unknown serialisation method {method!r}")
    token = _RESOLVER.set(resolve)
    try:
        return _Unpickler(io.BytesIO(stream), buffers=buffers).load()
    finally:
        _RESOLVER.reset(token)
