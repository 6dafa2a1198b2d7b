"""The routes' dependencies: the settings, the runtime, the metrics, the frame limits, the
admission budgets and the API-key scopes, all read from the app they serve (``app.state``, set
by :func:`service.api.create_app`), so several differently configured apps can share a process.
Per request: its deadline (set by :class:`service.admission.AdmissionMiddleware`) and the name
of the API key that was accepted (``request.state.key_name``, for the access and audit lines)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security

from service.admission import Admission, Deadline
from service.embedding import TrackletWork
from service.frames import FrameLimits
from service.metrics import ServiceMetrics
from service.runtime import Runtime
from service.schemas import ApiError
from service.security import API_KEY_SCHEME, ApiKeys, Scope
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def get_limits(request: Request) -> FrameLimits:
    return request.app.state.limits


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ApiError(503, "not_ready", "the model and gallery are still loading")
    return runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
LimitsDep = Annotated[FrameLimits, Depends(get_limits)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_deadline(request: Request) -> Deadline:
    deadline: Deadline | None = request.scope.get("state", {}).get("deadline")
    return deadline or Deadline.start(request.app.state.settings.request_timeout_s)


def get_work(
    request: Request,
    runtime: RuntimeDep,
    limits: LimitsDep,
    metrics: MetricsDep,
    deadline: Annotated[Deadline, Depends(get_deadline)],
) -> TrackletWork:
    admission: Admission = request.app.state.admission
    return TrackletWork(runtime, limits, admission, deadline, metrics)


def key_name(request: Request) -> str | None:
    """The name of the API key this request was accepted with (None: authentication is off)."""
    return request.scope.get("state", {}).get("key_name")


def _api_keys(request: Request) -> ApiKeys:
    return request.app.state.api_keys


def _require(scope: Scope):
    """A dependency checking ``scope``, documented in OpenAPI as the key header."""

    async def check_key(
        request: Request,
        keys: Annotated[ApiKeys, Depends(_api_keys)],
        key: Annotated[str | None, Security(API_KEY_SCHEME)] = None,
    ) -> None:
        request.state.key_name = keys.check(key, scope)

    return check_key


WorkDep = Annotated[TrackletWork, Depends(get_work)]
#: Route dependencies: ``dependencies=[CAN_READ]``.
CAN_READ = Depends(_require(Scope.READ))
CAN_WRITE = Depends(_require(Scope.WRITE))
