"""The dashboard's two languages: its words, and numbers, amounts, dates and periods per locale.

Every label the pages show is a key of :data:`MESSAGES` with its English and Simplified Chinese
text (a test checks both exist for every key a template uses). Numbers, amounts and dates are
formatted by Babel with the locale's CLDR data: ``¥1,234.50`` and ``2024年3月`` in Chinese,
``CN¥1,234.50`` and ``Mar 2024`` in English; large amounts optionally in 万 / 亿.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime, format_skeleton
from babel.numbers import (
    format_compact_currency,
    format_compact_decimal,
    format_currency,
    format_decimal,
    format_percent,
)

from crm_perf_sync.kpi.schemas import display

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
_BABEL = {"en": "en_US", "zh": "zh_Hans_CN"}

MESSAGES: dict[str, tuple[str, str]] = {
    # (English, Simplified Chinese)
    "product": ("Sales performance", "销售绩效"),
    "nav.overview": ("Overview", "总览"),
    "nav.leaderboard": ("Teams and reps", "团队与销售"),
    "nav.funnel": ("Funnel and cycle", "漏斗与周期"),
    "nav.targets": ("Targets", "目标"),
    "nav.alerts": ("Alerts", "预警"),
    "nav.operations": ("Operations", "运行状态"),
    "nav.main": ("Main navigation", "主导航"),
    "sign_in.title": ("Sign in", "登录"),
    "sign_in.key": ("API key", "API 密钥"),
    "sign_in.help": (
        "Sign in with an API key (crm-perf-sync apikey create). A read or editor key sees every "
        "page; an admin key can also edit targets.",
        "请使用 API 密钥登录（crm-perf-sync apikey create）。"
        "只读或录入密钥可查看所有页面；管理员密钥还可编辑目标。",
    ),
    "sign_in.submit": ("Sign in", "登录"),
    "sign_in.failed": ("Sign-in failed", "登录失败"),
    "sign_out": ("Sign out", "退出登录"),
    "signed_in_as": ("Signed in as", "当前用户"),
    "scope.read": ("read", "只读"),
    "scope.editor": ("editor", "录入"),
    "scope.admin": ("admin", "管理员"),
    "language": ("Language", "语言"),
    "language.switch": ("中文", "English"),
    "wan.on": ("Large amounts in 万", "大额以“万”显示"),
    "wan.off": ("Full amounts", "显示完整金额"),
    "grain": ("Grain", "周期粒度"),
    "grain.week": ("Week", "周"),
    "grain.month": ("Month", "月"),
    "grain.quarter": ("Quarter", "季度"),
    "grain.year": ("Year", "年"),
    "grain.all": ("All time", "全部"),
    "period": ("Period", "期间"),
    "show": ("Show", "查看"),
    "team": ("Team", "团队"),
    "all_teams": ("All teams", "全部团队"),
    "scorecard": ("Scorecard", "评分卡"),
    "kpi": ("KPI", "指标"),
    "value": ("Value", "数值"),
    "target": ("Target", "目标"),
    "attainment": ("Attainment", "达成率"),
    "gap": ("Gap", "差距"),
    "pace": ("Pace", "进度"),
    "pace.help": ("attainment ÷ share of the period elapsed", "达成率 ÷ 期间已过比例"),
    "previous_period": ("Previous period", "上期"),
    "last_year": ("Same period last year", "去年同期"),
    "trend": ("Trend", "趋势"),
    "no_value": ("no value", "无数据"),
    "low_sample": ("few records", "样本不足"),
    "sample": ("records", "条记录"),
    "explain": ("Explain", "明细"),
    "explain.title": ("How this number was computed", "该数值的计算方式"),
    "explain.formula": ("Formula", "公式"),
    "explain.filters": ("Filters", "筛选条件"),
    "explain.numerator": ("Numerator", "分子"),
    "explain.denominator": ("Denominator", "分母"),
    "explain.measure": ("Measured records", "计量记录"),
    "explain.records": ("Records", "记录"),
    "entity.opportunities": ("opportunities", "商机"),
    "entity.leads": ("leads", "线索"),
    "explain.inputs": ("Computed from", "计算依据"),
    "explain.used_as": ("Used as", "用作"),
    "sample_size": ("Records counted", "样本数"),
    "closed": ("Closed", "关闭时间"),
    "explain.more": ("More records", "更多记录"),
    "explain.crm_id": ("CRM id", "CRM 编号"),
    "explain.connection": ("Connection", "连接"),
    "explain.open_in_crm": ("Open in the CRM", "在 CRM 中打开"),
    "explain.contribution": ("Counts", "计入值"),
    "explain.name": ("Name", "名称"),
    "explain.total": ("Total", "合计"),
    "company": ("Company", "公司"),
    "scope": ("Scope", "范围"),
    "scope.company": ("Company", "公司"),
    "scope.team": ("Team", "团队"),
    "scope.owner": ("Rep", "销售"),
    "stale.title": ("The data may be out of date", "数据可能不是最新的"),
    "stale.never": ("never synced successfully", "从未成功同步"),
    "stale.last_success": ("last successful sync", "上次成功同步"),
    "stale.lag": ("behind by", "滞后"),
    "fresh": ("Data as of", "数据更新于"),
    "live.updated": ("Updated at {time}", "已于 {time} 更新"),
    "leaderboard.title": ("Scorecard leaderboard", "评分卡排行榜"),
    "rank": ("Rank", "排名"),
    "team_rank": ("Team rank", "团队排名"),
    "rep": ("Rep", "销售"),
    "score": ("Score", "得分"),
    "grade": ("Grade", "等级"),
    "weight": ("Weight", "权重"),
    "normalised": ("Normalised", "标准化得分"),
    "components": ("Components", "评分项"),
    "dropped": ("Not counted", "未计入"),
    "no_scores": ("No scores for this period yet.", "该期间暂无评分。"),
    "rep.kpis": ("KPIs over time", "各期指标"),
    "rep.pipeline": ("Open pipeline", "在途商机"),
    "rep.scores": ("Scores", "评分"),
    "rep.activities": ("Recent activities", "最近活动"),
    "perspectives": ("Perspectives", "维度得分"),
    "activity.type": ("Type", "类型"),
    "activity.subject": ("Subject", "主题"),
    "activity.when": ("When", "时间"),
    "activity.account": ("Account", "客户"),
    "activity.outcome": ("Outcome", "结果"),
    "activity.open": ("not completed", "未完成"),
    "activity.call": ("Call", "电话"),
    "activity.meeting": ("Meeting", "会议"),
    "activity.visit": ("Visit", "拜访"),
    "activity.email": ("Email", "邮件"),
    "activity.task": ("Task", "任务"),
    "activity.proposal": ("Proposal", "方案/报价"),
    "activity.note": ("Note", "备注"),
    "opportunity": ("Opportunity", "商机"),
    "stage": ("Stage", "阶段"),
    "amount": ("Amount", "金额"),
    "probability": ("Probability", "赢率"),
    "close_date": ("Expected close", "预计成交"),
    "created": ("Created", "创建时间"),
    "funnel.title": ("Stage funnel", "阶段漏斗"),
    "funnel.reached": ("Reached", "到达数"),
    "funnel.conversion": ("Conversion from the stage before", "较上一阶段转化率"),
    "funnel.none": ("No funnel KPI is defined.", "未定义漏斗指标。"),
    "cycle.title": ("Sales cycle of won deals", "赢单销售周期"),
    "cycle.days": ("Days from creation to close", "从创建到成交的天数"),
    "cycle.deals": ("Won deals", "赢单数"),
    "cycle.mean": ("Mean", "平均"),
    "cycle.median": ("Median", "中位数"),
    "cycle.p90": ("90th percentile", "第90百分位"),
    "targets.title": ("Targets in force", "生效中的目标"),
    "targets.set": ("Set a target", "设置目标"),
    "targets.defined": ("Targets set here", "在此设置的目标"),
    "targets.save": ("Save target", "保存目标"),
    "targets.remove": ("Remove", "删除"),
    "targets.applies": (
        "A change applies at the next KPI refresh (the worker runs one within a minute).",
        "修改将在下次指标刷新时生效（后台每分钟内刷新一次）。",
    ),
    "targets.saved": ("Saved. It applies at the next refresh.", "已保存，将在下次刷新时生效。"),
    "targets.removed": ("Removed. It applies at the next refresh.", "已删除，将在下次刷新时生效。"),
    "targets.read_only": (
        "Targets are edited with an admin key.",
        "目标需使用管理员密钥编辑。",
    ),
    "targets.split": ("Split to reps", "拆分到销售"),
    "targets.currency": ("Currency", "币种"),
    "targets.scope_id": ("Team or rep id", "团队或销售编号"),
    "targets.none": ("No targets are in force.", "暂无生效的目标。"),
    "targets.source": ("Source", "来源"),
    "targets.origin.period": ("from a longer period", "由更长周期分解"),
    "targets.origin.team": ("split from the team", "由团队目标拆分"),
    "error": ("Something is wrong", "出现问题"),
    "alerts.firing": ("Firing", "触发中"),
    "alerts.history": ("History", "历史记录"),
    "alerts.none_firing": ("No alert is firing.", "当前没有触发的预警。"),
    "alerts.rule": ("Rule", "规则"),
    "alerts.since": ("Since", "开始于"),
    "alerts.state": ("State", "状态"),
    "alerts.at": ("At", "时间"),
    "alerts.none": ("Nothing has fired yet.", "尚无预警记录。"),
    "ops.connections": ("Connections", "数据连接"),
    "ops.runs": ("Recent sync runs", "最近的同步"),
    "ops.deliveries": ("Webhook deliveries", "Webhook 投递"),
    "ops.kind": ("Kind", "类型"),
    "ops.status": ("Status", "状态"),
    "ops.started": ("Started", "开始"),
    "ops.finished": ("Finished", "结束"),
    "ops.records": ("Records", "记录数"),
    "ops.error": ("Error", "错误"),
    "ops.waiting": ("Waiting", "等待中"),
    "ops.failed": ("Failed", "失败"),
    "ops.delivered": ("Delivered", "已送达"),
    "ops.last_success": ("Last success", "上次成功"),
    "ops.lag": ("Lag", "滞后"),
    "ops.pushes": ("Pushes", "推送"),
    "ops.push_waiting": ("{n} waiting", "{n} 条待处理"),
    "ops.push_parked": ("{n} parked", "{n} 条已搁置"),
    "ops.never": ("never", "从未"),
    "ops.schedule": ("Schedule", "计划"),
    "ops.refresh": ("Last KPI refresh", "上次指标刷新"),
    "previous": ("Previous", "上一页"),
    "next": ("Next", "下一页"),
    "none": ("None.", "无。"),
    "name": ("Name", "名称"),
    "id": ("Id", "编号"),
    "description": ("Description", "说明"),
    # Funnel and cycle, alerts and operations pages
    "funnel.all_reps": ("All reps", "全部销售"),
    "funnel.empty": ("No deals for this period and scope.", "该期间和范围内没有商机。"),
    "funnel.pipeline": ("Pipeline", "销售流程"),
    "cycle.help": (
        "Won deals closed in the period, by days from creation to close.",
        "本期间内成交的赢单，按从创建到成交的天数分布。",
    ),
    "alerts.threshold": ("Threshold", "阈值"),
    "alerts.severity": ("Severity", "级别"),
    "alerts.reason": ("Reason", "原因"),
    "alerts.newest": ("Newest", "最新"),
    "alerts.state.ok": ("ok", "正常"),
    "alerts.state.pending": ("pending", "待确认"),
    "alerts.state.firing": ("firing", "触发中"),
    "alerts.state.resolved": ("resolved", "已恢复"),
    "alerts.reason.rule_changed": ("rule changed", "规则已修改"),
    "alerts.reason.rule_removed": ("rule removed", "规则已删除"),
    "alerts.reason.scope_removed": ("scope removed", "范围已移除"),
    "alerts.severity.info": ("info", "提示"),
    "alerts.severity.warning": ("warning", "警告"),
    "alerts.severity.critical": ("critical", "严重"),
    "ops.last_run": ("Last run", "最近一次运行"),
    "ops.skipped": ("Skipped records", "跳过的记录"),
    "ops.failures_24h": ("Failures (24 h)", "24小时内失败"),
    "ops.disabled": ("disabled", "已停用"),
    "ops.syncing": ("syncing now", "正在同步"),
    "ops.took": ("Took", "耗时"),
    "ops.retrying": ("Retrying", "重试中"),
    "ops.oldest_waiting": ("Oldest waiting for", "最早等待时长"),
    "ops.failed_24h": ("Failed (24 h)", "24小时内失败"),
    "ops.failed_deliveries": ("Failed deliveries", "投递失败"),
    "ops.waiting_deliveries": ("Deliveries waiting", "等待投递"),
    "ops.event": ("Event", "事件"),
    "ops.endpoint": ("Endpoint", "接收端"),
    "ops.attempts": ("Attempts", "尝试次数"),
    "ops.next_attempt": ("Next attempt", "下次尝试"),
    "ops.run.queued": ("queued", "排队中"),
    "ops.run.running": ("running", "运行中"),
    "ops.run.succeeded": ("succeeded", "成功"),
    "ops.run.failed": ("failed", "失败"),
    "ops.run.deferred": ("deferred", "已推迟"),
    "ops.run.interrupted": ("interrupted", "已中断"),
    "ops.run.abandoned": ("abandoned", "已放弃"),
    # Incentives
    "nav.incentives": ("Incentives", "激励"),
    "incentives.title": ("Incentive payouts", "激励发放"),
    "incentives.plan": ("Plan", "方案"),
    "incentives.no_plans": ("No incentive plan is configured.", "未配置激励方案。"),
    "incentives.not_started": ("The plan has not started yet.", "该方案尚未开始。"),
    "incentives.plan_total": ("The plan pays in this period", "本期方案发放合计"),
    "incentives.participants": ("{n} participants", "{n} 名参与者"),
    "incentives.earned": ("Earned", "应得"),
    "incentives.tier": ("Tier", "档位"),
    "incentives.capped": ("Capped", "已封顶"),
    "incentives.yes": ("yes", "是"),
    "incentives.no": ("no", "否"),
    "incentives.closed": ("Closed", "已结算"),
    "incentives.closed_by": ("closed by", "结算人"),
    "incentives.open": (
        "Open: the payouts follow every refresh until the period is closed.",
        "未结算：结算前每次刷新都会更新发放金额。",
    ),
    "incentives.statement": ("Pay statement", "薪酬明细"),
    "incentives.statements": ("Pay statements", "薪酬明细"),
    "incentives.other_plans": ("Other plans", "其他方案"),
    "incentives.total": ("Total", "合计"),
    "incentives.no_quota": ("No quota for this period.", "本期无定额。"),
    "incentives.tier_reached": ("Tier reached", "已达档位"),
    "incentives.next_tier_needs": ("Tier {tier} needs {amount} more", "再完成 {amount} 即可达到第 {tier} 档"),
    "incentives.at_pace": ("At the current pace", "按当前进度"),
    "incentives.elapsed": ("of the period elapsed:", "期间已过："),
    "incentives.tiers": ("Tiers, as a share of quota", "档位（按定额比例）"),
    "incentives.mode.marginal": ("each tier's rate on the part within it", "各档费率按档内部分计算"),
    "incentives.mode.retroactive": ("the tier reached pays on everything", "所达档位费率适用于全部业绩"),
    "incentives.from": ("From", "起"),
    "incentives.to": ("To", "止"),
    "incentives.rate": ("Rate", "费率"),
    "incentives.lines": ("Lines", "明细行"),
    "incentives.component": ("Component", "组成部分"),
    "incentives.kind": ("Kind", "类别"),
    "incentives.base": ("Base", "计提基数"),
    "incentives.quota": ("Quota", "定额"),
    "incentives.units_score": ("Units or score", "数量或得分"),
    "incentives.details": ("Details", "说明"),
    "incentives.payout": ("Payout", "本期发放"),
    "incentives.adjustment": ("Adjustment", "调整"),
    "incentives.corrects": ("correcting", "更正"),
    "incentives.uncapped": ("before the cap", "封顶前"),
    "incentives.paid": ("paid", "已发"),
    "incentives.now": ("now", "现应为"),
    "incentives.change.gone": ("no longer counts", "不再计入"),
    "incentives.change.new": ("newly counts", "新计入"),
    "incentives.change.changed": ("counts differently", "计入值变更"),
    "incentives.type.commission": ("commission", "提成"),
    "incentives.type.spiff": ("SPIFF", "专项奖励"),
    "incentives.type.score_bonus": ("score bonus", "评分奖金"),
    "incentives.type.team_pool": ("team pool", "团队奖金池"),
    "incentives.explain": ("What this line is made of", "该明细行的构成"),
    "incentives.cap_applied": (
        "The cap applied: the records earned {earned}, the line pays {paid}.",
        "已封顶：记录合计应得 {earned}，本行发放 {paid}。",
    ),
    "incentives.records": ("Records behind the line", "该行对应的记录"),
    "incentives.tiers_filled": ("Tiers it fell in", "所属档位"),
    "incentives.unit": ("unit", "单位"),
    "incentives.records_earned": ("The records earned together, before any cap", "记录合计应得（封顶前）"),
    "incentives.no_records": (
        "No records: this component is not paid on records.",
        "无记录：该组成部分不按记录计算。",
    ),
}

#: The notes the payouts write on a line that pays nothing for a reason, by how they begin.
_NOTES_ZH = (
    ("no quota for this period", "本期无定额"),
    ("the quota is zero", "定额为零"),
    ("below the threshold of", "未达到定额的起付比例"),
    ("no score for this period", "本期无评分"),
    ("score below the minimum of", "评分低于最低要求"),
    ("no share of the pool", "未分得奖金池（无评分或贡献）"),
    ("the pool has no shares", "奖金池无人可分"),
)


def note_text(note: str, language: Language) -> str:
    """A payout line's note in ``language`` (as written, in English, when it is not a known one)."""
    if language == "en":
        return note
    return next((zh for start, zh in _NOTES_ZH if note.startswith(start)), note)


@cache
def _locale(language: Language) -> Locale:
    """The language's Babel locale, parsed once (Babel parses a locale name on every call)."""
    return Locale.parse(_BABEL[language])


#: How many formatted numbers are kept per kind of formatting.
FORMATTED_CACHE = 16_384


def _memoised(format_number: Callable[..., str]) -> Callable[..., str]:
    """``format_number(value, *rest)``, remembered.

    Babel takes tens of microseconds per number, and a 500-rep leaderboard formats thousands of
    them, most of them the same few hundred values (normalised scores, weights, counts, rates).
    The value's type and sign are part of the key: ``-0.0 == 0``, but Babel writes ``-0``.
    """

    @lru_cache(maxsize=FORMATTED_CACHE)
    def remembered(_kind: str, _negative: bool, value: Any, *rest: Any) -> str:
        return format_number(value, *rest)

    def formatted(value: Any, *rest: Any) -> str:
        return remembered(type(value).__name__, math.copysign(1.0, value) < 0, value, *rest)

    return formatted


@_memoised
def _decimal(value: float, pattern: str, language: Language) -> str:
    return format_decimal(value, pattern, locale=_locale(language))


@_memoised
def _compact_decimal(value: float, language: Language) -> str:
    return format_compact_decimal(value, locale=_locale(language), fraction_digits=2)


@_memoised
def _currency(value: float, currency: str, language: Language) -> str:
    return format_currency(value, currency, locale=_locale(language))


@_memoised
def _compact_currency(value: float, currency: str, language: Language) -> str:
    return format_compact_currency(value, currency, locale=_locale(language), fraction_digits=2)


@_memoised
def _percent(value: float, language: Language) -> str:
    return format_percent(value, "#,##0.0%", locale=_locale(language))


@lru_cache(maxsize=FORMATTED_CACHE)
def _skeleton(skeleton: str, day: date, language: Language) -> str:
    """A date in a CLDR skeleton, remembered: the overview labels 12 periods for each of its tiles."""
    return format_skeleton(skeleton, day, locale=_locale(language))


# Durations shown as "3 h 20 min" / "3小时20分钟".
_UNITS = {"en": (" d", " h", " min", " s"), "zh": ("天", "小时", "分钟", "秒")}


def negotiate(accept_language: str | None) -> Language:
    """The language an ``Accept-Language`` header prefers among ours (English by default)."""
    best: tuple[float, Language] = (0.0, "en")
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > best[0]:
            best = (quality, "zh" if primary == "zh" else "en")
    return best[1]


@dataclass(frozen=True, slots=True)
class Formatter:
    """Words and numbers in one language; ``wan``: amounts of 10,000 and more in 万/亿."""

    language: Language
    wan: bool = False
    fiscal_start_month: int = 1

    @property
    def locale(self) -> Locale:
        return _locale(self.language)

    def t(self, key: str) -> str:
        return MESSAGES[key][0 if self.language == "en" else 1]

    def number(self, value: float | None, digits: int = 0) -> str:
        if value is None:
            return "–"
        if self.wan and abs(value) >= 10_000:
            return _compact_decimal(value, self.language)
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return _decimal(value, pattern, self.language)

    def money(self, value: float | None, currency: str) -> str:
        if value is None:
            return "–"
        if not currency:
            return self.number(value, 2)
        if self.wan and abs(value) >= 10_000:
            return _compact_currency(value, currency, self.language)
        return _currency(value, currency, self.language)

    def percent(self, value: float | None) -> str:
        return "–" if value is None else _percent(value, self.language)

    def days(self, value: float | None) -> str:
        if value is None:
            return "–"
        return self.number(value, 1) + (" d" if self.language == "en" else " 天")

    def value(self, value: float | None, unit: str, currency: str = "") -> str:
        """A KPI value in its unit: percent, currency, days, count, ratio or number."""
        if unit == "percent":
            return self.percent(value)
        if unit == "currency":
            return self.money(value, currency)
        if unit == "days":
            return self.days(value)
        if unit == "count":
            return self.number(value)
        return self.number(value, 2)

    def day(self, value: date | None) -> str:
        if value is None:
            return "–"
        return _skeleton("yMMMd", value, self.language)

    def moment(self, value: datetime | None, zone: str = "UTC") -> str:
        if value is None:
            return "–"
        return format_datetime(value, "yyyy-MM-dd HH:mm", tzinfo=ZoneInfo(zone), locale=self.locale)

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return "–"
        units = _UNITS[self.language]
        left = int(seconds)
        parts: list[str] = []
        for size, label in zip((86_400, 3600, 60, 1), units, strict=True):
            if left >= size or (size == 1 and not parts):
                parts.append(f"{left // size}{label}")
                left %= size
            if len(parts) == 2:
                break
        return (" " if self.language == "en" else "").join(parts)

    def period(self, grain: str, start: date | None) -> str:
        """A period as people name it: ``Mar 2024``, ``2024 Q1``, ``FY2024/25`` / ``2024年3月``…"""
        if grain == "all" or start is None:
            return self.t("grain.all")
        if grain == "month":
            return _skeleton("yMMM", start, self.language)
        if grain == "week":
            day = _skeleton("yMMMd", start, self.language)
            return f"Week of {day}" if self.language == "en" else f"{day}当周"
        fiscal = self.fiscal_start_month
        first_year = start.year if start.month >= fiscal else start.year - 1
        year = str(first_year) if fiscal == 1 else f"{first_year}/{(first_year + 1) % 100:02d}"
        if grain == "year":
            if fiscal == 1:
                return year if self.language == "en" else f"{year}年"
            return f"FY{year}" if self.language == "en" else f"{year}财年"
        quarter = ((start.month - fiscal) % 12) // 3 + 1
        if self.language == "en":
            return f"{'FY' if fiscal != 1 else ''}{year} Q{quarter}"
        return f"{year}{'财年' if fiscal != 1 else '年'}第{quarter}季度"


def display_name(definition: Any, language: Language) -> str:
    """A KPI's or scorecard's name in ``language`` (its English name where it has no translation)."""
    return display(definition, language)[0]


def activity_type(kind: str, language: Language) -> str:
    """An activity's type in ``language``: the fixed kinds translated, a configured one as it is."""
    words = MESSAGES.get(f"activity.{kind}")
    return kind if words is None else words[0 if language == "en" else 1]


def perspective_name(card: Any, perspective: dict[str, Any], language: Language) -> str:
    """A stored score's perspective by the scorecard's current wording (its id when it is gone)."""
    for defined in card.perspectives:
        if defined.id == perspective["id"]:
            translation = defined.i18n.get(language)
            return str(translation.name if translation is not None else defined.name)
    return str(perspective.get("name") or perspective["id"])


_ENTITIES_ZH = {"opportunities": "商机", "leads": "线索", "activities": "活动", "accounts": "客户"}


def formula(kpi: Any, language: Language) -> str:
    """How a KPI is computed, in words: :func:`crm_perf_sync.kpi.explain.formula_text` in English,
    the same sentence in Chinese (field names stay as the data model spells them)."""
    from crm_perf_sync.kpi.explain import formula_text

    if language == "en":
        return formula_text(kpi)
    kind = kpi.type
    if kind == "count":
        entity = _ENTITIES_ZH.get(kpi.measure.entity, kpi.measure.entity)
        return f"符合筛选条件的{entity}数量，按 {kpi.measure.period} 归入期间"
    if kind == "sum":
        term = kpi.measure.sum if kpi.measure.weight is None else f"{kpi.measure.sum} * {kpi.measure.weight}"
        entity = _ENTITIES_ZH.get(kpi.measure.entity, kpi.measure.entity)
        return f"符合筛选条件的{entity}的 {term} 之和，按币种分别汇总"
    if kind == "ratio":
        scale = f" * {kpi.scale:g}" if kpi.scale != 1 else ""
        return f"分子记录之和 / 分母记录之和{scale}（期间与范围内的总和之比，不是各销售比率的平均）"
    if kind == "duration":
        stat = {"mean": "平均值", "median": "中位数", "p90": "第90百分位（最近秩）"}[kpi.stat]
        return f"符合条件记录从 {kpi.start} 到 {kpi.end} 的天数的{stat}"
    if kind == "funnel":
        return (
            "到达某阶段的商机数 / 到达上一阶段的商机数；"
            "商机被视为到达了其曾到过的最远阶段之前的每个未结束或赢单阶段"
        )
    if kind == "measure":
        stat = {"mean": "平均值", "sum": "合计", "last": "最近一期的值（多条时取平均）"}[kpi.stat]
        return (
            f"期间内（同粒度或更细粒度）{kpi.measure_id} 各条录入值的{stat}："
            "销售取本人的，团队取团队及其成员的，公司取全部"
        )
    if kind == "customers":
        return {
            "new": f"首个赢单（按 {kpi.measure.period} 最早，同日并列均计）落在本期间的客户数",
            "repeat_revenue_share": "此前已有赢单的客户的赢单收入 / 所有有客户的赢单收入，按币种分别统计",
            "retention": "上一期间有赢单且本期间再次赢单的客户数 / 上一期间有赢单的客户数",
        }[kpi.stat]
    return f"{kpi.formula}（各输入取相同期间、范围与币种）"


def filter_text(text: str, language: Language) -> str:
    """A filter as :func:`crm_perf_sync.kpi.explain.describe_filter` words it, in ``language``."""
    if language == "en":
        return text
    if text == "not deleted":
        return "未删除"
    if text.endswith(" is empty"):
        return text.removesuffix(" is empty") + " 为空"
    if text.endswith(" is set"):
        return text.removesuffix(" is set") + " 不为空"
    return text.replace(" not in ", " 不属于 ").replace(" in ", " 属于 ")
