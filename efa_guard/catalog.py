"""The journal events efa-guard logs: one name and one fixed MESSAGE_ID each.

config/efa-guard.catalog explains every one to `journalctl -x`; a test keeps the enum, the
catalog and the README's table in sync.
"""

from __future__ import annotations

import enum


class EventKind(enum.StrEnum):
    """What happened; the value is the structlog event name and the journal's EFA_EVENT."""

    STARTED = "started"
    POLICY_ASSERTED = "policy_asserted"
    DRIFT_CORRECTED = "drift_corrected"
    CORRECTION_FAILED = "correction_failed"
    CONTESTED = "contested"
    CONFIG_RELOADED = "config_reloaded"
    CONFIG_REJECTED = "config_rejected"
    STOPPING = "stopping"
    INTERFACE_CHANGED = "interface_changed"
    RETRY_SCHEDULED = "retry_scheduled"
    EVENTS_LOST = "events_lost"
    SOURCE_FAILED = "source_failed"
    SOURCE_RESTORED = "source_restored"
    EXPOSURE = "exposure"
    SURVEY_FAILED = "survey_failed"
    STATUS = "status"
    BACKEND_WARNING = "backend_warning"
    CANNOT_START = "cannot_start"
    INTERNAL_ERROR = "internal_error"
    CONTEST_ENDED = "contest_ended"
    CONFIG_FALLBACK = "config_fallback"
    LOG_ENTRIES_DROPPED = "log_entries_dropped"
    METRICS_FAILED = "metrics_failed"
    PAUSED = "paused"
    RESUMED = "resumed"
    DRIFT_OBSERVED = "drift_observed"
    POLICY_REMOVED = "policy_removed"

    @property
    def message_id(self) -> str:
        """The fixed journal MESSAGE_ID of this kind."""
        return MESSAGE_IDS[self.value]


# One fixed MESSAGE_ID per event kind (never change one: operators filter on them).
MESSAGE_IDS: dict[str, str] = {
    EventKind.STARTED: "84aeb418d0284f0fb2fba35e6c7ef02c",
    EventKind.POLICY_ASSERTED: "3fc4d5c3f7ab49eaa8f7a481cf3c3914",
    EventKind.DRIFT_CORRECTED: "90ce71a381474c89b36fb4b3755e87cd",
    EventKind.CORRECTION_FAILED: "030360c6babc4512a5c8ae4f408b7f46",
    EventKind.CONTESTED: "4b5047015cd247e399792ae9977baf9c",
    EventKind.CONFIG_RELOADED: "72ba558e87d64ae39f65bb96fc1f5a5a",
    EventKind.CONFIG_REJECTED: "52ccf3a754e64218bff4e4ef6ee1e79e",
    EventKind.STOPPING: "82990a93f4d44761b4dc40f249570124",
    EventKind.INTERFACE_CHANGED: "c408c57e3e454b0d9b3dc46d69da2e75",
    EventKind.RETRY_SCHEDULED: "00ce042eae054ce2a38d1ae38ca35c35",
    EventKind.EVENTS_LOST: "e9b280f87fbb4695866a8fd93579d696",
    EventKind.SOURCE_FAILED: "004cc36694904d99881782b6bd71797e",
    EventKind.SOURCE_RESTORED: "c27797c2785e4e328b0b2d34392e7086",
    EventKind.EXPOSURE: "acdb35cbbd374da5939a6b86e0a59381",
    EventKind.SURVEY_FAILED: "12b3cae757e84b73bc62f4ab6efca869",
    EventKind.STATUS: "07db12eedf30494283737d9bb36db3b7",
    EventKind.BACKEND_WARNING: "16285ab06ff344e88e4248f4f0be92c7",
    EventKind.CANNOT_START: "4f6474d288a440139d88bc1ac9e3bb40",
    EventKind.INTERNAL_ERROR: "913b28d935434b06be7cd2aa5097d638",
    EventKind.CONTEST_ENDED: "17abfd60c3c14fd59863bdc27628560e",
    EventKind.CONFIG_FALLBACK: "f8853e88d5974128971a2808eaa1bd60",
    EventKind.LOG_ENTRIES_DROPPED: "18356146601949e892b97acb026e37c5",
    EventKind.METRICS_FAILED: "0238929eba264232bfaf8d100341ba00",
    EventKind.PAUSED: "62a1c511c47242b29bc14c088a1365d4",
    EventKind.RESUMED: "26040628ddf440de953a96f8d85c64fd",
    EventKind.DRIFT_OBSERVED: "3dfe10d0e16b4add9b6390f90b306973",
    EventKind.POLICY_REMOVED: "e30188803a86492783ed93e9b91f6a82",
}
