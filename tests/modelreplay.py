"""A client's copy of a whole board (the board model included), kept the way docs/PROTOCOL.md
says any reader can: apply each event by replacing the entity it carries, removing what it
names, and applying rank changes. Generic on purpose: it knows the entity field names, not the
event kinds (except the older column and card events, whose shapes predate the rule)."""

from __future__ import annotations

from typing import Any

# event field -> snapshot collection
_ENTITIES = {
    "card": "cards",
    "column": "columns",
    "label": "labels",
    "field": "fields",
    "checklist": "checklists",
    "item": "items",
    "comment": "comments",
    "attachment": "attachments",
}
_COLLECTIONS = tuple(_ENTITIES.values())
# which collection a kind's `rebalanced` ranks belong to, by its prefix
_RANKED = {"column": "columns", "card": "cards", "checklist": "checklists", "item": "items"}


class ModelCopy:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.seq: int = snapshot["seq"]
        self.title: str = snapshot["title"]
        self.allow_wip_overflow: bool = snapshot.get("allow_wip_overflow", False)
        self.data: dict[str, dict[str, dict[str, Any]]] = {
            name: {str(x["id"]): dict(x) for x in snapshot.get(name, [])} for name in _COLLECTIONS
        }

    def apply(self, msg: dict[str, Any]) -> None:
        assert msg["type"] == "event", msg
        assert msg["seq"] == self.seq + 1, (self.seq, msg)
        self.seq = msg["seq"]
        ev = msg["event"]
        kind: str = ev["kind"]
        d = self.data
        if kind == "board.updated":
            self.title = ev.get("title") or self.title
        elif kind == "board.configured":
            self.allow_wip_overflow = ev["allow_wip_overflow"]
        elif kind in ("column.updated", "column.moved"):
            col = d["columns"][str(ev["column_id"])]
            col.update({k: ev[k] for k in ("title", "rank") if k in ev})
        elif kind in ("card.updated", "card.moved"):
            card = d["cards"][str(ev["card_id"])]
            card.update(
                {k: ev[k] for k in ("title", "description", "column_id", "rank") if ev.get(k) is not None}
            )
        elif kind == "card.deleted":
            self._drop_card(str(ev["card_id"]))
        elif kind == "column.deleted":
            for card_id in ev.get("card_ids", []):
                self._drop_card(str(card_id))
            del d["columns"][str(ev["column_id"])]
        elif kind == "checklist.deleted":
            del d["checklists"][str(ev["checklist_id"])]
            for item_id in ev.get("item_ids", []):
                del d["items"][str(item_id)]
        elif kind.endswith(".deleted"):
            # label, field, item, comment, attachment: the id of what was removed
            name = kind.split(".")[0]
            del d[_ENTITIES[name]][str(ev[f"{name}_id"])]
        # complete entities, whatever the kind
        for field, name in _ENTITIES.items():
            entity = ev.get(field)
            if isinstance(entity, dict):
                d[name][str(entity["id"])] = dict(entity)
        for card in ev.get("cards", []) + ev.get("moved", []):
            d["cards"][str(card["id"])] = dict(card)
        ranked = _RANKED.get(kind.split(".")[0])
        for item_id, rank in ev.get("rebalanced", []):
            assert ranked is not None, kind
            d[ranked][str(item_id)]["rank"] = rank

    def _drop_card(self, card_id: str) -> None:
        d = self.data
        del d["cards"][card_id]
        for name in ("checklists", "items", "comments", "attachments"):
            for key in [k for k, v in d[name].items() if str(v["card_id"]) == card_id]:
                del d[name][key]

    def normalised(self) -> dict[str, Any]:
        return {"seq": self.seq, "allow_wip_overflow": self.allow_wip_overflow, **_sorted(self.data)}


def normalised(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot (REST or `joined`) in ModelCopy.normalised()'s shape."""
    data = {name: {str(x["id"]): dict(x) for x in snapshot.get(name, [])} for name in _COLLECTIONS}
    return {
        "seq": snapshot["seq"],
        "allow_wip_overflow": snapshot.get("allow_wip_overflow", False),
        **_sorted(data),
    }


def _sorted(data: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rows in data.items():
        out[name] = [{k: _plain(v) for k, v in rows[i].items()} for i in sorted(rows)]
    return out


def _plain(value: Any) -> Any:
    # MessagePack and JSON both decode ids as strings; keep dict keys and lists comparable
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
