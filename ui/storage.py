"""The console's Storage page: which index holds the state, what an acknowledgement
means for it, its file, size and commits, the open windows against their bound, and
the data directory's lock."""

from __future__ import annotations

from collections.abc import Callable

from helios.daemon.readmodels import ReadModels
from nicegui import ui


def storage_page(reads: ReadModels, header: Callable[[str], None]) -> None:
    header("Storage")
    with ui.card().classes("w-full"):
        backend = ui.label("-").classes("text-lg font-semibold helios-storage-backend")
        durability = ui.label("-").classes("text-sm helios-storage-durability")
        windows = ui.label("-").classes("text-sm helios-storage-windows")
        bar = ui.linear_progress(value=0.0, show_value=False, size="14px").classes("w-96")
        data_dir = ui.label("-").classes("text-sm font-mono helios-storage-dir")
    with ui.card().classes("w-full"):
        ui.label("What the index reports").classes("font-semibold")
        table = ui.table(
            columns=[
                {"name": "key", "label": "", "field": "key", "align": "left"},
                {"name": "value", "label": "", "field": "value", "align": "left"},
            ],
            rows=[],
            row_key="key",
        ).classes("w-full helios-storage-details")
    with ui.card().classes("w-full"):
        ui.label("Bloom filters: deliveries remembered past the index TTL").classes("font-semibold")
        bloom = ui.label("-").classes("text-sm helios-storage-bloom")
        bloom_bar = ui.linear_progress(value=0.0, show_value=False, size="14px").classes("w-96")
        bloom_fp = ui.label("-").classes("text-sm helios-storage-bloom-fp")

    def refresh() -> None:
        s = reads.storage()
        backend.set_text(f"index: {s.backend}")
        durability.set_text(s.durability)
        share = s.open_windows / s.max_open_windows if s.max_open_windows else 0.0
        windows.set_text(
            f"open windows {s.open_windows:,} of at most {s.max_open_windows:,} "
            "(reconcile.max_open_windows; beyond it ingest answers RESOURCE_EXHAUSTED)"
        )
        bar.set_value(share)
        bar.props(f"color={'green' if share < 0.8 else 'orange' if share < 0.95 else 'red'}")
        lock = "locked by this heliosd" if s.data_dir_locked else "not locked"
        data_dir.set_text(f"data directory {s.data_dir} ({lock})")
        table.rows = [{"key": k, "value": v} for k, v in sorted(s.details.items())]
        table.update()
        b = s.bloom
        if b is None:
            bloom.set_text("off (index.bloom.enabled = false)")
            return
        bloom.set_text(
            f"{b.slices} time slices, one filter per source each, {b.capacity_per_filter:,} "
            f"event ids per filter, {b.bytes / 1e6:,.1f} MB; current slice {b.fill:.1%} full"
        )
        bloom_bar.set_value(min(b.fill, 1.0))
        bloom_bar.props(f"color={'green' if b.fill < 0.8 else 'orange' if b.fill < 1 else 'red'}")
        bloom_fp.set_text(
            f"estimated false positives: {b.false_positive_rate:.4%} per filter "
            f"(configured {b.configured_error_rate:.2%} at capacity), "
            f"{b.lookup_false_positive_rate:.4%} per lookup across slices; recognised "
            f"after their record left the index: {b.aged_late:,} LATE, "
            f"{b.aged_duplicates:,} DUPLICATE; remembers events closed in the last "
            f"{max(0.0, reads.counters().now - b.oldest_slice_started) / 3600:,.1f} h; "
            f"{b.slices_set_aside} slices set aside (their records may not be stored)"
        )

    refresh()
    ui.timer(2.0, refresh)
