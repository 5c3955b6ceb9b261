"""Rules for what hangs off a card: checklists and their items (ranked like cards), comments
(with the members they mention) and attachments."""

from __future__ import annotations

import re
import uuid

import msgspec

from actors.ranks import RankedList
from actors.state_base import StateBase, conflict
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode, bad_request
from protocol.model import Checklist, ChecklistItem, Comment

_copy = msgspec.structs.replace
_UNSET = msgspec.UNSET
_MENTION = re.compile(r"(?<![\w@])@([\w][\w.\-]*)")
MAX_CHECKLISTS = 50  # per card
MAX_ITEMS = 500  # per checklist


def _mention_key(text: str) -> str:
    return "".join(text.split()).casefold()


class PartRules(StateBase):
    def apply_part_rule(self, cmd: c.Command, author: uuid.UUID, now_ms: int) -> c.Event | None:
        """The event of a checklist, comment or attachment command (None: not one of these)."""
        match cmd:
            case c.CreateChecklist():
                card = self._card(cmd.card_id)
                order = self.checklist_order.get(card.id) or RankedList()
                if len(order) >= MAX_CHECKLISTS:
                    raise bad_request(f"a card has at most {MAX_CHECKLISTS} checklists")
                self._check_neighbours(order, None, cmd.after, cmd.before, "checklist")
                cl_id = uuid.uuid4()
                rank, moved = order.place(cl_id, cmd.after, cmd.before)
                self.checklist_order[card.id] = order
                cl = self.checklists[cl_id] = Checklist(id=cl_id, card_id=card.id, title=cmd.title, rank=rank)
                self.item_order[cl_id] = RankedList()
                self._touch("checklists", cl_id)
                return c.ChecklistCreated(
                    checklist=_copy(cl), rebalanced=self._rerank(self.checklists, "checklists", moved)
                )
            case c.RenameChecklist():
                cl = self._checklist(cmd.checklist_id)
                cl.title = cmd.title
                self._touch("checklists", cl.id)
                return c.ChecklistRenamed(checklist=_copy(cl))
            case c.MoveChecklist():
                cl = self._checklist(cmd.checklist_id)
                order = self.checklist_order[cl.card_id]
                self._check_neighbours(order, cl.id, cmd.after, cmd.before, "checklist")
                order.remove(cl.id)
                cl.rank, moved = order.place(cl.id, cmd.after, cmd.before)
                self._touch("checklists", cl.id)
                return c.ChecklistMoved(
                    checklist=_copy(cl), rebalanced=self._rerank(self.checklists, "checklists", moved)
                )
            case c.DeleteChecklist():
                cl = self._checklist(cmd.checklist_id)
                self.checklist_order[cl.card_id].remove(cl.id)
                return c.ChecklistDeleted(checklist_id=cl.id, item_ids=self._drop_checklist(cl.id))
            case c.CreateItem():
                cl = self._checklist(cmd.checklist_id)
                order = self.item_order[cl.id]
                if len(order) >= MAX_ITEMS:
                    raise bad_request(f"a checklist has at most {MAX_ITEMS} items")
                self._check_neighbours(order, None, cmd.after, cmd.before, "item")
                if cmd.assignee_id is not None:
                    self._member(cmd.assignee_id)
                item_id = uuid.uuid4()
                rank, moved = order.place(item_id, cmd.after, cmd.before)
                item = self.items[item_id] = ChecklistItem(
                    id=item_id,
                    checklist_id=cl.id,
                    card_id=cl.card_id,
                    text=cmd.text,
                    rank=rank,
                    assignee_id=cmd.assignee_id,
                    due_ms=cmd.due_ms,
                )
                self._touch("items", item_id)
                return c.ItemCreated(item=_copy(item), rebalanced=self._rerank(self.items, "items", moved))
            case c.UpdateItem():
                return self._update_item(cmd)
            case c.MoveItem():
                item = self._item(cmd.item_id)
                target = self._checklist(cmd.checklist_id)
                order = self.item_order[target.id]
                self._check_neighbours(order, item.id, cmd.after, cmd.before, "item")
                if target.id != item.checklist_id and len(order) >= MAX_ITEMS:
                    raise bad_request(f"a checklist has at most {MAX_ITEMS} items")
                self.item_order[item.checklist_id].remove(item.id)
                item.checklist_id, item.card_id = target.id, target.card_id
                item.rank, moved = order.place(item.id, cmd.after, cmd.before)
                self._touch("items", item.id)
                return c.ItemMoved(item=_copy(item), rebalanced=self._rerank(self.items, "items", moved))
            case c.DeleteItem():
                item = self._item(cmd.item_id)
                self.item_order[item.checklist_id].remove(item.id)
                del self.items[item.id]
                self._touch("items", item.id)
                return c.ItemDeleted(item_id=item.id)
            case c.CreateComment():
                card = self._card(cmd.card_id)
                comment = Comment(
                    id=uuid.uuid4(),
                    card_id=card.id,
                    author_id=author,
                    body=cmd.body,
                    mentions=self.mentions(cmd.body),
                    created_at_ms=now_ms,
                )
                self.comments[comment.id] = comment
                self.card_comments.setdefault(card.id, []).append(comment.id)
                self._touch("comments", comment.id)
                return c.CommentCreated(comment=_copy(comment))
            case c.EditComment():
                comment = self._comment(cmd.comment_id)
                if comment.author_id != author:
                    raise BoardcastError(ErrorCode.FORBIDDEN, "only its author may edit a comment")
                comment.body, comment.mentions = cmd.body, self.mentions(cmd.body)
                comment.edited_at_ms = now_ms
                self._touch("comments", comment.id)
                return c.CommentEdited(comment=_copy(comment))
            case c.DeleteComment():
                # Whether the author or a moderator deletes it is decided by the access rules
                # (server.access.action_for) before the command is applied.
                comment = self._comment(cmd.comment_id)
                self.card_comments[comment.card_id].remove(comment.id)
                del self.comments[comment.id]
                self._touch("comments", comment.id)
                return c.CommentDeleted(comment_id=comment.id, card_id=comment.card_id)
            case c.AddAttachment():
                att = cmd.attachment
                self._card(att.card_id)
                if att.id in self.attachments:
                    raise conflict("an attachment with this id exists", attachment_id=str(att.id))
                self.attachments[att.id] = att
                self.card_attachments.setdefault(att.card_id, []).append(att.id)
                self._touch("attachments", att.id)
                return c.AttachmentAdded(attachment=_copy(att))
            case c.DeleteAttachment():
                att = self._attachment(cmd.attachment_id)
                del self.attachments[att.id]
                self.card_attachments[att.card_id].remove(att.id)
                self._touch("attachments", att.id)
                event = c.AttachmentDeleted(
                    attachment_id=att.id, card_id=att.card_id, blob_key=att.blob_key, thumb_key=att.thumb_key
                )
                card = self.cards[att.card_id]
                if card.cover_id == att.id:
                    card.cover_id = None
                    self._touch("cards", card.id)
                    event.card = _copy(card)
                return event
        return None

    def _update_item(self, cmd: c.UpdateItem) -> c.Event:
        item = self._item(cmd.item_id)
        if all(v is _UNSET for v in (cmd.text, cmd.done, cmd.assignee_id, cmd.due_ms)):
            raise bad_request("nothing to change: give 'text', 'done', 'assignee_id' or 'due_ms'")
        if cmd.assignee_id is not _UNSET and cmd.assignee_id is not None:
            self._member(cmd.assignee_id)
        if cmd.text is not _UNSET:
            item.text = cmd.text
        if cmd.done is not _UNSET:
            item.done = cmd.done
        if cmd.assignee_id is not _UNSET:
            item.assignee_id = cmd.assignee_id
        if cmd.due_ms is not _UNSET:
            item.due_ms = cmd.due_ms
        self._touch("items", item.id)
        return c.ItemUpdated(item=_copy(item))

    def mentions(self, body: str) -> list[uuid.UUID]:
        """The members ``body`` mentions, in order of first mention. ``@token`` names the member
        whose name, without spaces and ignoring case, is ``token`` (``@AnnLee`` for "Ann Lee"),
        or, if only one member's first name is ``token``, that member (``@ann``)."""
        tokens = _MENTION.findall(body)
        if not tokens:
            return []
        full: dict[str, uuid.UUID] = {}
        first: dict[str, list[uuid.UUID]] = {}
        for user_id, name in self.members.items():
            full.setdefault(_mention_key(name), user_id)
            words = name.split()
            if words:
                first.setdefault(words[0].casefold(), []).append(user_id)
        found: dict[uuid.UUID, None] = {}
        for token in tokens:
            key = token.rstrip(".-").casefold()
            user = full.get(key)
            if user is None and len(first.get(key, [])) == 1:
                user = first[key][0]
            if user is not None:
                found[user] = None
        return list(found)
