"""The routes' dependencies: the settings, the runtime, the metrics, the frame limits and the
API-key scopes, all read from the app they serve (``app.state``, set by
:func:`service.api.create_app`), so several differently configured apps can share a process."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security

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


def _api_keys(request: Request) -> ApiKeys:
    return request.app.state.api_keys


def _require(scope: Scope):
    """A dependency checking ``scope``, documented in OpenAPI as the key header."""

    async def check_key(
        keys: Annotated[ApiKeys, Depends(_api_keys)],
        key: Annotated[str | None, Security(API_KEY_SCHEME)] = None,
    ) -> None:
        keys.check(key, scope)

    return check_key


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
LimitsDep = Annotated[FrameLimits, Depends(get_limits)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
#: Route dependencies: ``dependencies=[CAN_READ]``.
CAN_READ = Depends(_require(Scope.READ))
CAN_WRITE = Depends(_require(Scope.WRITE))
