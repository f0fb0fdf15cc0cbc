// 医后付 patient app: a small ES-module app over the patient JSON API (/v1/patient/*).
// No build step and no framework: a hash router, one render function per screen.

const STAGES = {
  registered: "已挂号", checked_in: "已签到，候诊中", called: "已叫号，请到诊室", in_consultation: "医生诊疗中",
  awaiting_results: "检查/检验中", prescribed: "已开药，请到药房取药", skin_test: "皮试中", dispensed: "已取药",
  in_infusion: "输液中", discharged: "已离院",
};
const NEXT = {
  registered: "请在 App 或护士站签到", checked_in: "请留意叫号屏", called: "请进入诊室就诊",
  in_consultation: "请听从医生安排", awaiting_results: "完成检查后，请带报告回到医生处", prescribed: "请到药房取药",
  skin_test: "请等待皮试结果", dispensed: "如需输液请到输液室，否则可直接离院", in_infusion: "输液结束后即可离院",
  discharged: "无需排队缴费：请在 7 天内在账单页一次付清",
};
const EVENTS = {
  checked_in: "签到", called: "叫号", consultation_started: "开始就诊", consultation_ended: "就诊结束",
  orders_placed: "开具检查/治疗", orders_cancelled: "取消项目（已退费）", results_ready: "报告已出",
  prescribed: "开具处方", skin_test_result: "皮试结果", dispensed: "药房发药", infusion_started: "开始输液",
  infusion_finished: "输液结束", discharged: "离院",
};
const PAY = { open: "就诊中", due: "待支付", arrears: "欠费", defaulted: "已逾期", settled: "已结清" };
const SERVICE = { normal: "正常", arrears: "欠费", defaulted: "违约" };
const CATEGORY = { exam: "检查", lab: "检验", treatment: "治疗", drug: "药品", infusion: "输液", material: "材料", other: "其他" };
const AGREEMENT = "2026-01";
const CHANNEL = { wechat: "微信支付", alipay: "支付宝", sandbox: "沙箱支付" };
const METHOD = { ...CHANNEL, cash: "现金", card: "银行卡", insurance: "医保", insurance_pooled: "医保统筹基金", insurance_personal: "医保个人账户" };
const REFUND = { created: "已申请", processing: "退款中", manual: "请到窗口领取", succeeded: "已退回", failed: "退款失败，医院将联系您" };

const view = document.getElementById("view");
let timer = null;

const h = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const yuan = (fen) => `¥${(fen / 100).toFixed(2)}`;
const when = (iso) => (iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" }) : "");
const token = () => localStorage.getItem("yhf.token");

async function api(path, { method = "GET", body, key } = {}) {
  const headers = { "content-type": "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  if (key) headers["Idempotency-Key"] = key;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (r.status === 401 && path.startsWith("/v1/patient/") && !path.endsWith("/login")) {
    localStorage.removeItem("yhf.token");
    location.hash = "#/login";
  }
  if (!r.ok) throw Object.assign(new Error(data?.detail || `HTTP ${r.status}`), { status: r.status, problem: data });
  return data;
}

function show(html, tab) {
  view.innerHTML = html;
  const tabs = document.getElementById("tabs");
  tabs.hidden = !token();
  for (const a of tabs.querySelectorAll("a")) a.classList.toggle("on", a.dataset.tab === tab);
}

function fail(el, err) {
  el.textContent = err.problem?.reasons ? `${err.message}` : err.message;
}

async function sendCode(phone, button) {
  button.disabled = true;
  let left = 60;
  try {
    await api("/v1/patient/sms-code", { method: "POST", body: { phone } });
  } catch (err) {
    button.disabled = false;
    throw err;
  }
  const tick = setInterval(() => {
    button.textContent = `${--left}s`;
    if (left <= 0) { clearInterval(tick); button.disabled = false; button.textContent = "获取验证码"; }
  }, 1000);
}

// --- screens --------------------------------------------------------------------------

const screens = {
  async login() {
    show(`<div class="card"><h1>登录医后付</h1>
      <p class="muted">先看病，后付费：就诊全程无需排队缴费，离院后 7 天内一次付清。</p>
      <label for="phone">手机号</label>
      <div class="row"><input id="phone" inputmode="numeric" maxlength="11" placeholder="11 位手机号">
        <button id="send" class="secondary">获取验证码</button></div>
      <label for="code">验证码</label><input id="code" inputmode="numeric" maxlength="6" placeholder="6 位验证码">
      <button id="go">登录</button><div class="error" id="err"></div></div>`);
    const err = document.getElementById("err");
    document.getElementById("send").onclick = (e) =>
      sendCode(document.getElementById("phone").value.trim(), e.target).catch((x) => fail(err, x));
    document.getElementById("go").onclick = async () => {
      try {
        const phone = document.getElementById("phone").value.trim();
        const out = await api("/v1/patient/login", { method: "POST", body: { phone, code: document.getElementById("code").value.trim() } });
        localStorage.setItem("yhf.token", out.token);
        localStorage.setItem("yhf.phone", phone);
        location.hash = out.patient_id ? "#/home" : "#/identity";
      } catch (x) { fail(err, x); }
    };
  },

  async identity() {
    show(`<div class="card"><h1>绑定就诊人</h1><p class="muted">请输入在医院登记的姓名和身份证号。</p>
      <label for="name">姓名</label><input id="name" autocomplete="name">
      <label for="idn">身份证号</label><input id="idn" maxlength="18">
      <button id="go">绑定</button><div class="error" id="err"></div></div>`);
    document.getElementById("go").onclick = async () => {
      try {
        await api("/v1/patient/identity", { method: "POST", body: { name: document.getElementById("name").value.trim(), id_number: document.getElementById("idn").value.trim().toUpperCase() } });
        location.hash = "#/home";
      } catch (x) { fail(document.getElementById("err"), x); }
    };
  },

  async home() {
    let me;
    try { me = await api("/v1/patient/me"); } catch (x) {
      if (x.problem?.code === "identity_required") { location.hash = "#/identity"; return; }
      throw x;
    }
    document.getElementById("who").textContent = `${me.name} ${me.phone ?? ""}`;
    const advice = {
      normal: "服务正常，可直接挂号就诊。",
      arrears: "您有未付的就诊费用，挂号前请先在账单页付清；逾期将锁定医保卡并上报征信。",
      defaulted: "您的欠费已逾期：医保卡已锁定，欠费已上报征信平台。付清后自动解锁并更正征信记录。",
    }[me.service_status];
    show(`<div class="card"><h2>服务状态</h2>
        <p><span class="status ${h(me.service_status)}" id="service">${h(SERVICE[me.service_status])}</span>
        ${me.card_locked ? '<span class="status defaulted" id="card">医保卡已锁定</span>' : ""}</p>
        <p class="muted">${h(advice)}</p>
        ${me.service_status === "normal" ? "" : '<a class="btn" href="#/bill">去付款</a>'}</div>
      <div class="card"><h2>医后付服务</h2>${me.enrolled
        ? `<p>已开通（${h(when(me.enrollment.enrolled_at))}，协议 ${h(me.enrollment.agreement_version)}）</p>
           <button class="danger" id="unenrol">注销医后付</button><div class="error" id="err"></div>`
        : '<p class="muted">开通后，就诊全程无需排队缴费。</p><a class="btn" href="#/enrol" id="enrol">开通医后付</a>'}</div>
      <div class="card list"><a href="#/receipts" id="receipts-link">电子票据 ›</a></div>
      <div class="card list"><a href="#/refunds">退款记录 ›</a></div>
      <div class="card list"><a href="#/credit">我的信用分 ›</a></div>
      <button class="secondary" id="logout">退出登录</button>`, "home");
    document.getElementById("logout").onclick = async () => {
      await api("/v1/patient/logout", { method: "POST" }).catch(() => {});
      localStorage.removeItem("yhf.token");
      location.hash = "#/login";
    };
    const un = document.getElementById("unenrol");
    if (un) un.onclick = async () => {
      if (!confirm("确定注销医后付服务？")) return;
      try {
        await api("/v1/patient/enrollment", { method: "DELETE" });
        localStorage.removeItem("yhf.token");
        location.hash = "#/login";
      } catch (x) { fail(document.getElementById("err"), x); }
    };
  },

  async enrol() {
    const phone = localStorage.getItem("yhf.phone") || "";
    show(`<div class="card"><h1>开通医后付</h1>
      <div class="agreement">《医后付服务协议》（${AGREEMENT} 版）：您授权医院在就诊过程中将各项费用记入本次就诊账单，并在离院后 7 天内通过本应用一次付清。
      就诊当日未付清的转为欠费，平台每日短信提醒；逾期 7 天未付的，医院将锁定您的医保卡并向征信平台报送，付清后自动解锁并更正。
      开通需满足：参加本地医保，或银行信用分 ≥ 110，或芝麻信用分 ≥ 700。</div>
      <label for="phone">手机号</label>
      <div class="row"><input id="phone" inputmode="numeric" maxlength="11" value="${h(phone)}">
        <button id="send" class="secondary">获取验证码</button></div>
      <label for="code">验证码</label><input id="code" inputmode="numeric" maxlength="6">
      <button id="go">同意协议并开通</button><div class="error" id="err"></div><ul id="reasons" class="muted"></ul></div>`, "home");
    const err = document.getElementById("err");
    document.getElementById("send").onclick = (e) =>
      sendCode(document.getElementById("phone").value.trim(), e.target).catch((x) => fail(err, x));
    document.getElementById("go").onclick = async () => {
      try {
        await api("/v1/patient/enrollment", { method: "POST", body: { agreement_version: AGREEMENT, phone: document.getElementById("phone").value.trim(), code: document.getElementById("code").value.trim() } });
        location.hash = "#/home";
      } catch (x) {
        if (x.problem?.code === "not_eligible") {
          err.textContent = "暂不符合开通条件：";
          document.getElementById("reasons").innerHTML = x.problem.rules
            .map((r) => `<li>${r.passed ? "✓" : "✗"} ${h(r.reason)}</li>`).join("");
        } else fail(err, x);
      }
    };
  },

  async visits() {
    const visits = await api("/v1/patient/visits");
    show(`<h1>我的就诊</h1>${visits.length ? "" : '<div class="card muted">暂无就诊记录</div>'}
      ${visits.map((v) => `<div class="card list"><a href="#/visit/${encodeURIComponent(v.visit_id)}">
        <h2>${h(v.department)} <span class="status ${h(v.payment_status)}">${h(PAY[v.payment_status])}</span></h2>
        <div>${h(STAGES[v.stage])}</div><div class="muted">${h(when(v.created_at))} · ${yuan(v.bill.total_fen)}</div></a></div>`).join("")}`, "visits");
  },

  async visit(id) {
    const v = await api(`/v1/patient/visits/${encodeURIComponent(id)}`);
    show(`<div class="card"><h1>${h(v.department)}</h1>
        <p class="muted">就诊号 ${h(v.visit_id)}</p>
        <p>当前：<strong id="stage">${h(STAGES[v.stage])}</strong></p>
        <p class="muted" id="next">下一步：${h(NEXT[v.stage])}</p></div>
      <div class="card"><h2>就诊进度</h2><ul class="timeline" id="timeline">
        <li>挂号 · ${h(when(v.created_at))}</li>
        ${v.events.map((e) => `<li>${h(EVENTS[e.type] || e.type)} · ${h(when(e.occurred_at))}</li>`).join("")}</ul></div>
      <div class="card"><h2>费用 <span class="status ${h(v.payment_status)}">${h(PAY[v.payment_status])}</span></h2>
        ${lines(v.bill)}</div>`, "visits");
    if (v.stage !== "discharged") timer = setTimeout(() => route(), 3000); // live while the visit runs
  },

  async bill() {
    const [b, options] = await Promise.all([api("/v1/patient/bill"), api("/v1/patient/payment-options")]);
    const buttons = b.balance_fen > 0 ? options.channels.map((c) =>
      `<button class="${c === "sandbox" ? "secondary" : ""}" data-channel="${h(c)}">${h(CHANNEL[c])}一次付清</button>`).join("")
      + (options.insurance ? '<a class="btn secondary" href="#/insurance" id="insurance">医保支付（统筹 + 个人账户 + 自付）</a>' : "") : "";
    show(`<div class="card"><h2>待付合计</h2><div class="money big" id="total">${yuan(b.balance_fen)}</div>
        <p class="muted">${b.visits.length ? `${b.visits.length} 次就诊合并支付` : "没有待付的账单"}</p>
        <div class="channels">${buttons}</div><div class="error" id="err"></div></div>
      ${b.visits.map((v) => `<div class="card"><h2>${h(v.department)} <span class="status ${h(v.payment_status)}">${h(PAY[v.payment_status])}</span></h2>
        <p class="muted">${h(when(v.created_at))}${v.due_at ? ` · 请于 ${h(when(v.due_at))} 前支付` : ""}</p>${lines(v.bill)}</div>`).join("")}`, "bill");
    for (const button of document.querySelectorAll("button[data-channel]")) button.onclick = async () => {
      const channel = button.dataset.channel;
      button.disabled = true;
      try {
        const key = sessionStorage.getItem(`yhf.paykey.${channel}`) || crypto.randomUUID();
        sessionStorage.setItem(`yhf.paykey.${channel}`, key);
        const p = await api("/v1/patient/payments", { method: "POST", body: { channel }, key });
        sessionStorage.setItem(`yhf.payurl.${p.payment_id}`, p.pay_url || "");
        location.hash = `#/pay/${p.payment_id}/${p.amount_fen}/${channel}`;
      } catch (x) { button.disabled = false; fail(document.getElementById("err"), x); }
    };
  },

  async pay(id, amount, channel = "sandbox") {
    const url = sessionStorage.getItem(`yhf.payurl.${id}`) || "";
    const away = channel !== "sandbox" && /^https?:/.test(url)
      ? `<a class="btn" href="${h(url)}" rel="noopener">前往${h(CHANNEL[channel])}付款</a>` : "";
    show(`<div class="card"><h1>收银台 · ${h(CHANNEL[channel] || channel)}</h1><p>应付 <span class="money big">${yuan(Number(amount))}</span></p>
      ${away}<p class="muted">沙箱：点击下方按钮，模拟患者在${h(CHANNEL[channel] || "渠道")}完成付款；渠道回调通知医后付。</p>
      <button id="confirm">确认支付</button><div class="error" id="err"></div></div>`, "bill");
    document.getElementById("confirm").onclick = async (e) => {
      e.target.disabled = true;
      try {
        await api(`/v1/sandbox/payments/${encodeURIComponent(id)}/complete`, { method: "POST" });
        sessionStorage.removeItem(`yhf.paykey.${channel}`);
        show(`<div class="card"><h1 id="paid">支付成功</h1><p>已付 ${yuan(Number(amount))}，账单已结清。</p>
          <a class="btn" href="#/home">返回</a></div>`, "bill");
      } catch (x) { e.target.disabled = false; fail(document.getElementById("err"), x); }
    };
  },

  async insurance() {
    const [split, options] = await Promise.all([
      api("/v1/patient/insurance/presettle", { method: "POST", body: {} }), api("/v1/patient/payment-options")]);
    show(`<div class="card"><h1>医保支付</h1><p class="muted">医保局预结算结果：</p>
      <table class="lines" id="split"><tr><td>费用合计</td><td class="money">${yuan(split.total_fen)}</td></tr>
        <tr><td>统筹基金支付</td><td class="money">${yuan(split.pooled_fen)}</td></tr>
        <tr><td>个人账户支付</td><td class="money">${yuan(split.personal_fen)}</td></tr>
        <tr><td><strong>自付</strong></td><td class="money" id="self-pay">${yuan(split.self_pay_fen)}</td></tr></table>
      <div class="channels">${options.channels.map((c) => `<button data-channel="${h(c)}">确认，自付部分用${h(CHANNEL[c])}</button>`).join("")}</div>
      <p class="muted">自付部分未按时付款的，医保结算将自动冲正，不会重复扣费。</p><div class="error" id="err"></div></div>`, "bill");
    for (const button of document.querySelectorAll("button[data-channel]")) button.onclick = async () => {
      button.disabled = true;
      try {
        const out = await api(`/v1/patient/insurance/settlements/${encodeURIComponent(split.settlement_id)}/pay`,
          { method: "POST", body: { channel: button.dataset.channel }, key: `ins-${split.settlement_id}` });
        if (!out.self_pay) { location.hash = "#/visits"; return; }
        sessionStorage.setItem(`yhf.payurl.${out.self_pay.payment_id}`, out.self_pay.pay_url || "");
        location.hash = `#/pay/${out.self_pay.payment_id}/${out.self_pay.amount_fen}/${out.self_pay.channel}`;
      } catch (x) { button.disabled = false; fail(document.getElementById("err"), x); }
    };
  },

  async receipts() {
    const list = await api("/v1/patient/receipts");
    show(`<h1>电子票据</h1>${list.length ? "" : '<div class="card muted">暂无票据：就诊结清后自动开具</div>'}
      ${list.map((r) => `<div class="card receipt"><h2>${h(r.department)} <span class="muted">${h(r.receipt_id)}</span>
        ${r.voided_at ? '<span class="status defaulted">已作废</span>' : ""}</h2>
        <div class="muted">${h(when(r.issued_at))} · 第 ${r.version} 版 · 校验码 ${h(r.check_code)}</div>
        <p>合计 ${yuan(r.total_fen)} · ${r.payments.map((p) => `${h(METHOD[p.method] || p.method)} ${yuan(p.amount_fen)}`).join("，")}</p>
        <button class="secondary" data-receipt="${h(r.receipt_id)}">下载票据</button></div>`).join("")}`, "home");
    for (const button of document.querySelectorAll("button[data-receipt]")) button.onclick = async () => {
      const id = button.dataset.receipt;
      const r = await fetch(`/v1/patient/receipts/${encodeURIComponent(id)}?format=html`,
        { headers: { authorization: `Bearer ${token()}` } });
      const a = Object.assign(document.createElement("a"),
        { href: URL.createObjectURL(await r.blob()), download: `receipt-${id}.html` });
      a.click();
      URL.revokeObjectURL(a.href);
    };
  },

  async refunds() {
    const list = await api("/v1/patient/refunds");
    show(`<h1>退款记录</h1>${list.length ? "" : '<div class="card muted">暂无退款</div>'}
      ${list.map((r) => `<div class="card"><h2>${yuan(r.amount_fen)} <span class="status ${r.status === "succeeded" ? "settled" : "due"}">${h(REFUND[r.status])}</span></h2>
        <div class="muted">${h(when(r.created_at))} · 原路退回${h(METHOD[r.method] || r.method)} · ${r.reason === "overpayment" ? "多付退回" : "取消项目退费"}</div></div>`).join("")}`, "home");
  },

  async messages() {
    const inbox = await api("/v1/patient/notifications");
    show(`<h1>消息</h1>${inbox.length ? "" : '<div class="card muted">暂无消息</div>'}
      ${inbox.map((m) => `<div class="card"><div>${h(m.text)}</div><div class="muted">${h(when(m.sent_at))}</div></div>`).join("")}`, "messages");
  },

  async credit() {
    const me = await api("/v1/patient/me?credit=true");
    const c = me.credit || {};
    show(`<div class="card"><h1>我的信用分</h1>
      <p>银行信用分：<strong id="bank">${c.bank_score ?? "暂无"}</strong></p>
      <p>芝麻信用分：<strong id="sesame">${c.sesame_score ?? "暂无"}</strong></p>
      <p class="muted">开通条件：本地医保，或银行信用分 ≥ 110，或芝麻信用分 ≥ 700。</p></div>`, "home");
  },
};

function lines(bill) {
  const reversed = new Set(bill.lines.filter((l) => l.kind === "reversal").map((l) => l.item_id));
  const rows = bill.lines.filter((l) => l.kind === "charge").map((l) =>
    `<tr class="${reversed.has(l.item_id) ? "cancelled" : ""}"><td>${h(l.name)}<span class="muted"> ${h(CATEGORY[l.category] || "")}${l.quantity > 1 ? ` ×${l.quantity}` : ""}</span></td><td class="money">${yuan(l.amount_fen)}</td></tr>`).join("");
  return `<table class="lines">${rows}
    <tr><td>合计</td><td class="money">${yuan(bill.total_fen)}</td></tr>
    <tr><td>已付</td><td class="money">${yuan(bill.paid_fen)}</td></tr>
    ${(bill.payments || []).filter((p) => p.kind !== "payment").map((p) =>
      `<tr class="muted"><td>${p.kind === "refund" ? "退款" : "退款未成功，已退回账单"} · ${h(METHOD[p.method] || p.method || "")}</td><td class="money">${yuan(p.amount_fen)}</td></tr>`).join("")}
    <tr><td><strong>待付</strong></td><td class="money">${yuan(bill.balance_fen)}</td></tr></table>`;
}

async function route() {
  clearTimeout(timer);
  const [, name = "home", ...args] = location.hash.replace(/^#/, "").split("/");
  const screen = screens[name] || screens.home;
  if (!token() && name !== "login") { location.hash = "#/login"; return; }
  try {
    await screen(...args.map(decodeURIComponent));
  } catch (x) {
    if (x.status !== 401) show(`<div class="card error">出错了：${h(x.message)}</div>`);
  }
}

window.addEventListener("hashchange", route);
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
route();
