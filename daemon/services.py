"""The service layer: the one surface every front-end (gRPC servicers, the console,
/metrics, webhooks) uses. Commands change state through
`admission` (copies in) and `operator` (people's commands); `reads` answers questions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from helios.daemon.admission import Admission
from helios.daemon.auditlog import AuditLog
from helios.daemon.identity import Guard
from helios.daemon.observe import Observability
from helios.daemon.operator import Operator
from helios.daemon.readmodels import ReadModels
from helios.daemon.webhooks import Webhooks


@dataclass
class Services:
    admission: Admission
    reads: ReadModels
    operator: Operator
    guard: Guard  # who is calling (API keys, client certificates, roles)
    auditlog: AuditLog  # what people and clients asked, by whom, with what result
    webhooks: Webhooks  # cloud deliveries on the console's server, and the dead letters
    observe: Observability  # SLOs, error budgets and cost
    # Requests a front-end refused, by "Method:CODE" (GetStats and /metrics show them).
    refused: Counter[str] = field(default_factory=Counter)
