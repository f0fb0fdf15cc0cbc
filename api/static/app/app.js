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
  discharged: "已离院，账单生成中，稍后在账单页付清",
};
const EVENTS = {
  checked_in: "签到", called: "叫号", consultation_started: "开始就诊", consultation_ended: "就诊结束",
  orders_placed: "开具检查/治疗", orders_cancelled: "取消项目（已退费）", results_ready: "报告已出",
  prescribed: "开具处方", skin_test_result: "皮试结果", dispensed: "药房发药", infusion_started: "开始输液",
  infusion_finished: "输液结束", discharged: "离院",
};
const PAY = { open: "就诊中", due: "待支付", arrears: "欠费", defaulted: "已逾期", settled: "已结清", written_off: "已核销" };
const OWING = new Set(["due", "arrears", "defaulted"]); // discharged and owing: payable now
// the inbox: bills (charges, reminders, payments, refunds) and notices; codes are not kept here
const BILL_TEMPLATES = new Set(["bill_ready", "arrears", "dunning", "pre_default", "card_locked", "dunning_defaulted",
  "payment_received", "payment_received_unlocked", "refund_sent", "refund_at_window"]);
const DISPUTE = { open: "申诉处理中", upheld: "申诉成立，已减免", rejected: "申诉未成立" };
const SERVICE = { normal: "正常", arrears: "欠费", defaulted: "违约" };
const CATEGORY = { exam: "检查", lab: "检验", treatment: "治疗", drug: "药品", infusion: "输液", material: "材料", other: "其他" };
const AGREEMENT = "2026-01";
// the payment channels' labels come with the payment options (the server's one list of channels)
const CHANNEL = {};
const METHOD = { cash: "现金", card: "银行卡", insurance: "医保", insurance_pooled: "医保统筹基金", insurance_personal: "医保个人账户", nhsa_mobile: "医保移动支付（现金部分）" };
const PAID = new Set(["succeeded", "partially_refunded", "refunded"]);
const REFUND = { created: "已申请", processing: "退款中", manual: "请到窗口领取", succeeded: "已退回", failed: "退款失败，医院将联系您" };

const view = document.getElementById("view");
let timer = null;

const h = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const yuan = (fen) => `¥${(fen / 100).toFixed(2)}`;
// every time one way: China time, to the minute, "2026-11-30 09:05" (a deadline so shown is never late)
const CLOCK = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai", hourCycle: "h23", year: "numeric",
  month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
const when = (iso) => {
  if (!iso) return "";
  const p = Object.fromEntries(CLOCK.formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
};
const token = () => localStorage.getItem("yhf.token");
// the patient this sign-in sees; until one is bound (identity) or chosen (profiles), no tab bar
const patient = () => (token() ? localStorage.getItem("yhf.patient") : null);
function signOut() {
  localStorage.removeItem("yhf.token");
  localStorage.removeItem("yhf.patient");
}

async function api(path, { method = "GET", body, key } = {}) {
  const headers = { "content-type": "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  if (key) headers["Idempotency-Key"] = key;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (r.status === 401 && path.startsWith("/v1/patient/") && !path.endsWith("/login")) {
    signOut();
    location.hash = "#/login";
  }
  if (!r.ok) throw Object.assign(new Error(data?.detail || `HTTP ${r.status}`), { status: r.status, problem: data });
  return data;
}

// the payment options: the channels offered here (in order) and every channel's label
async function paymentOptions() {
  const options = await api("/v1/patient/payment-options");
  Object.assign(CHANNEL, options.labels);
  Object.assign(METHOD, options.labels);
  return options;
}

// the labels, asked for once a session (payments and receipts name their channel); a screen
// without them shows the channel's name
let labelled = null;
async function labels() {
  if (!token() || labelled === token()) return;
  labelled = token();
  await paymentOptions().catch(() => {});
}

function show(html, tab) {
  view.innerHTML = html;
  const tabs = document.getElementById("tabs");
  tabs.hidden = !patient(); // signed out, or no patient chosen yet: nothing behind the tabs
  if (!patient()) document.getElementById("who").textContent = "";
  for (const a of tabs.querySelectorAll("a")) a.classList.toggle("on", a.dataset.tab === tab);
}

function fail(el, err) {
  el.textContent = err.problem?.reasons ? `${err.message}` : err.message;
}

// purpose: "login" signs in, "enrol" enrols; a code serves its purpose only
async function sendCode(phone, button, purpose = "login") {
  button.disabled = true;
  let left = 60;
  try {
    await api("/v1/patient/sms-code", { method: "POST", body: { phone, purpose } });
  } catch (err) {
    button.disabled = false;
    throw err;
  }
  const tick = setInterval(() => {
    button.textContent = `${--left}s`;
    if (left <= 0) { clearInterval(tick); button.disabled = false; button.textContent = "获取验证码"; }
  }, 1000);
}

// a sign-in from before the app kept its patient: ask once whose it is (a token not yet bound
// to a patient answers 403 and stays without tabs)
async function bound() {
  if (!token() || localStorage.getItem("yhf.patient")) return;
  const me = await api("/v1/patient/me").catch(() => null);
  if (me) localStorage.setItem("yhf.patient", me.patient_id);
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
        signOut();
        localStorage.setItem("yhf.token", out.token);
        localStorage.setItem("yhf.phone", phone);
        if (out.patient_id) localStorage.setItem("yhf.patient", out.patient_id);
        location.hash = out.patient_id ? "#/home" : "#/profiles"; // none: bind one; several: choose
      } catch (x) { fail(err, x); }
    };
  },

  async profiles() {
    const list = await api("/v1/patient/profiles");
    if (!list.length) { location.hash = "#/identity"; return; }
    show(`<div class="card"><h1>选择就诊人</h1><p class="muted">此手机号关联了 ${list.length} 位就诊人，请选择：</p>
      <div id="profiles">${list.map((p) => `<button class="${p.current ? "" : "secondary"}" data-patient="${h(p.patient_id)}">
        ${h(p.name)}${p.enrolled ? "（已开通医后付）" : ""}</button>`).join("")}</div>
      <div class="error" id="err"></div></div>`, "home");
    for (const button of document.querySelectorAll("button[data-patient]")) button.onclick = async () => {
      try {
        const out = await api(`/v1/patient/profiles/${encodeURIComponent(button.dataset.patient)}/session`, { method: "POST" });
        localStorage.setItem("yhf.token", out.token); // this token sees this patient only
        localStorage.setItem("yhf.patient", out.patient_id);
        location.hash = "#/home";
      } catch (x) { fail(document.getElementById("err"), x); }
    };
  },

  async identity() {
    show(`<div class="card"><h1>绑定就诊人</h1><p class="muted">请输入在医院登记的姓名和身份证号。</p>
      <label for="name">姓名</label><input id="name" autocomplete="name">
      <label for="idn">身份证号</label><input id="idn" maxlength="18">
      <button id="go">绑定</button><div class="error" id="err"></div></div>`);
    document.getElementById("go").onclick = async () => {
      try {
        const out = await api("/v1/patient/identity", { method: "POST", body: { name: document.getElementById("name").value.trim(), id_number: document.getElementById("idn").value.trim().toUpperCase() } });
        localStorage.setItem("yhf.patient", out.patient_id);
        location.hash = "#/home";
      } catch (x) { fail(document.getElementById("err"), x); }
    };
  },

  async home() {
    let me, b;
    try { [me, b] = await Promise.all([api("/v1/patient/me"), api("/v1/patient/bill")]); } catch (x) {
      if (x.problem?.code === "identity_required") { location.hash = "#/profiles"; return; }
      throw x;
    }
    localStorage.setItem("yhf.patient", me.patient_id);
    document.getElementById("who").textContent = `${me.name} ${me.phone ?? ""}`;
    const payable = b.visits.filter((v) => OWING.has(v.payment_status));
    const running = b.visits.filter((v) => v.payment_status === "open").length;
    const owed = payable.reduce((sum, v) => sum + v.bill.balance_fen, 0);
    const deadline = earliest(payable.map((v) => v.due_at));
    show(`<div class="card"><h2>服务状态</h2>
        <p><span class="status ${h(me.service_status)}" id="service">${h(SERVICE[me.service_status])}</span>
        ${me.card_locked ? '<span class="status defaulted" id="card">医保卡已锁定</span>' : ""}</p>
        ${owed > 0 ? `<p>待付 <span class="money big" id="due">${yuan(owed)}</span></p>
          ${deadline ? `<p id="deadline">付款期限：${h(when(deadline))}</p>` : ""}
          <p class="muted" id="advice">${h(homeAdvice(me, payable, deadline))}</p>
          ${running ? `<p class="muted">另有 ${running} 次就诊进行中：离院后再付。</p>` : ""}
          <a class="btn" href="#/bill">去付款</a>`
        : `<p class="muted" id="advice">${h(running
          ? `没有待付的费用。${running} 次就诊进行中：离院后在账单页一次付清。`
          : me.service_status === "normal" ? "没有待付的费用，服务正常，可直接挂号就诊。" : "付款到账确认中，稍后自动恢复。")}</p>`}</div>
      <div class="card"><h2>医后付服务</h2>${me.enrolled
        ? `<p>已开通（${h(when(me.enrollment.enrolled_at))}，协议 ${h(me.enrollment.agreement_version)}）</p>
           <button class="danger" id="unenrol">注销医后付</button><div class="error" id="err"></div>`
        : '<p class="muted">开通后，就诊全程无需排队缴费。</p><a class="btn" href="#/enrol" id="enrol">开通医后付</a>'}</div>
      <div class="card list"><a href="#/profiles" id="switch">切换就诊人 ›</a></div>
      <div class="card list"><a href="#/receipts" id="receipts-link">电子票据 ›</a></div>
      <div class="card list"><a href="#/refunds">退款记录 ›</a></div>
      <div class="card list"><a href="#/credit">我的信用分 ›</a></div>
      <button class="secondary" id="logout">退出登录</button>`, "home");
    document.getElementById("logout").onclick = async () => {
      await api("/v1/patient/logout", { method: "POST" }).catch(() => {});
      signOut();
      location.hash = "#/login";
    };
    const un = document.getElementById("unenrol");
    if (un) un.onclick = async () => {
      if (!confirm("确定注销医后付服务？")) return;
      try {
        await api("/v1/patient/enrollment", { method: "DELETE" });
        signOut();
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
      sendCode(document.getElementById("phone").value.trim(), e.target, "enrol").catch((x) => fail(err, x));
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
    show(`<a class="back" href="#/visits" id="back">‹ 我的就诊</a>
      <div class="card"><h1>${h(v.department)}</h1>
        <p class="muted">就诊号 ${h(v.visit_id)}</p>
        <p>当前：<strong id="stage">${h(STAGES[v.stage])}</strong></p>
        <p class="muted" id="next">下一步：${h(nextStep(v))}</p></div>
      <div class="card"><h2>就诊进度</h2><ul class="timeline" id="timeline">${timeline(v)}</ul></div>
      <div class="card"><h2>费用 <span class="status ${h(v.payment_status)}">${h(PAY[v.payment_status])}</span></h2>
        ${lines(v.bill, v.payment_status === "open")}</div>${disputeCard(v)}`, "visits");
    const form = document.getElementById("dispute-send");
    if (form) form.onclick = async () => {
      const reason = document.getElementById("dispute-reason").value.trim();
      const err = document.getElementById("dispute-err");
      if (!reason) { err.textContent = "请写明申诉理由"; return; }
      form.disabled = true;
      try {
        await api(`/v1/patient/visits/${encodeURIComponent(v.visit_id)}/disputes`, { method: "POST", body: { reason } });
        await route();
      } catch (x) { fail(err, x); form.disabled = false; }
    };
    if (v.stage !== "discharged") timer = setTimeout(() => route(), 3000); // live while the visit runs
  },

  // payable visits (discharged, owing) apart from those in progress, which are paid after leaving;
  // "一次付清" pays the payable ones only, by name (visit_ids)
  async bill() {
    const [b, options] = await Promise.all([api("/v1/patient/bill"), paymentOptions()]);
    const payable = b.visits.filter((v) => OWING.has(v.payment_status));
    const running = b.visits.filter((v) => v.payment_status === "open");
    const ids = payable.map((v) => v.visit_id);
    const total = payable.reduce((sum, v) => sum + v.bill.balance_fen, 0);
    const deadline = earliest(payable.map((v) => v.due_at));
    const buttons = total > 0 ? options.channels.map((c) =>
      `<button class="${c === "sandbox" ? "secondary" : ""}" data-channel="${h(c)}">${h(CHANNEL[c] || c)}一次付清</button>`).join("")
      + (options.insurance ? '<a class="btn secondary" href="#/insurance" id="insurance">医保支付（统筹 + 个人账户 + 自付）</a>' : "") : "";
    show(`<div class="card"><h2>待付合计</h2><div class="money big" id="total">${yuan(total)}</div>
        <p class="muted">${payable.length ? `已离院的 ${payable.length} 次就诊合并支付${deadline ? `，最晚 ${h(when(deadline))}` : ""}` : "没有待付的账单"}</p>
        <div class="channels">${buttons}</div><div class="error" id="err"></div></div>
      <div id="payable">${payable.map((v) => `<div class="card" data-visit="${h(v.visit_id)}"><h2>${h(v.department)} <span class="status ${h(v.payment_status)}">${h(PAY[v.payment_status])}</span></h2>
        <p class="muted">${h(when(v.created_at))}${v.due_at ? ` · 请于 ${h(when(v.due_at))} 前支付` : ""}${v.hold ? " · 暂缓催收" : ""}</p>${lines(v.bill)}</div>`).join("")}</div>
      ${running.length ? `<div id="in-progress"><h2 class="section">就诊中（未离院，暂不付款）</h2>
        ${running.map((v) => `<div class="card running" data-visit="${h(v.visit_id)}"><h2>${h(v.department)} <span class="status open">${h(PAY.open)}</span></h2>
        <p class="muted">${h(when(v.created_at))} · 离院后计入待付账单，目前已记 ${yuan(v.bill.balance_fen)}</p>
        <a href="#/visit/${encodeURIComponent(v.visit_id)}">查看就诊进度 ›</a></div>`).join("")}</div>` : ""}`, "bill");
    for (const button of document.querySelectorAll("button[data-channel]")) button.onclick = async () => {
      const channel = button.dataset.channel;
      button.disabled = true;
      try {
        // one key per channel and set of visits: a retry is the same order, another bill a new one
        const slot = `yhf.paykey.${channel}.${ids.join(",")}.${total}`;
        const key = sessionStorage.getItem(slot) || crypto.randomUUID();
        sessionStorage.setItem(slot, key);
        const p = await api("/v1/patient/payments", { method: "POST", body: { channel, visit_ids: ids }, key });
        sessionStorage.setItem(`yhf.payurl.${p.payment_id}`, p.pay_url || "");
        location.hash = `#/pay/${p.payment_id}/${p.amount_fen}/${channel}`;
      } catch (x) { button.disabled = false; fail(document.getElementById("err"), x); }
    };
  },

  // the sandbox channel is paid here; WeChat Pay and Alipay at their own page, after which
  // this screen follows the payment until the channel has told us how it ended
  async pay(id, amount, channel = "sandbox") {
    const url = sessionStorage.getItem(`yhf.payurl.${id}`) || "";
    const name = h(CHANNEL[channel] || channel);
    show(`<div class="card"><h1>收银台 · ${name}</h1><p>应付 <span class="money big">${yuan(Number(amount))}</span></p>
      ${channel === "sandbox"
        ? '<p class="muted">沙箱：点击下方按钮，模拟患者完成付款；渠道回调通知医后付。</p><button id="confirm">确认支付</button>'
        : `${/^https?:/.test(url) ? `<a class="btn" id="away" href="${h(url)}" rel="noopener">前往${name}付款</a>` : ""}
           <p class="muted" id="waiting">在${name}付款后回到本页，支付结果将自动确认。</p>
           <button class="secondary" id="check">我已完成付款</button>`}
      <div class="error" id="err"></div></div>`, "bill");
    const here = location.hash;
    const err = document.getElementById("err");
    const follow = async () => {
      clearTimeout(timer);
      const p = await api(`/v1/patient/payments/${encodeURIComponent(id)}`);
      if (location.hash !== here) return;
      if (!p.final) { timer = setTimeout(() => follow().catch((x) => fail(err, x)), 2000); return; }
      for (const k of Object.keys(sessionStorage)) if (k.startsWith(`yhf.paykey.${channel}.`)) sessionStorage.removeItem(k);
      show(PAID.has(p.status)
        ? `<div class="card"><h1 id="paid">支付成功</h1><p>已付 ${yuan(p.amount_fen)}，账单已结清。</p><a class="btn" href="#/home">返回</a></div>`
        : `<div class="card"><h1 id="unpaid">支付未完成</h1><p>订单已关闭，没有扣款。请回到账单重新支付。</p><a class="btn" href="#/bill">返回账单</a></div>`, "bill");
    };
    const sandboxPay = document.getElementById("confirm");
    if (sandboxPay) sandboxPay.onclick = async () => {
      sandboxPay.disabled = true;
      try {
        await api(`/v1/sandbox/payments/${encodeURIComponent(id)}/complete`, { method: "POST" });
        await follow();
      } catch (x) { sandboxPay.disabled = false; fail(err, x); }
    };
    else {
      document.getElementById("check").onclick = () => follow().catch((x) => fail(err, x));
      await follow();
    }
  },

  async insurance() {
    // the payable visits only: a visit still in progress is settled after discharge
    const b = await api("/v1/patient/bill");
    const ids = b.visits.filter((v) => OWING.has(v.payment_status)).map((v) => v.visit_id);
    if (!ids.length) { location.hash = "#/bill"; return; }
    const [split, options] = await Promise.all([
      api("/v1/patient/insurance/presettle", { method: "POST", body: { visit_ids: ids } }), paymentOptions()]);
    show(`<div class="card"><h1>医保支付</h1><p class="muted">医保局预结算结果：</p>
      <table class="lines" id="split"><tr><td>费用合计</td><td class="money">${yuan(split.total_fen)}</td></tr>
        <tr><td>统筹基金支付</td><td class="money">${yuan(split.pooled_fen)}</td></tr>
        <tr><td>个人账户支付</td><td class="money">${yuan(split.personal_fen)}</td></tr>
        <tr><td><strong>自付</strong></td><td class="money" id="self-pay">${yuan(split.self_pay_fen)}</td></tr></table>
      <div class="channels">${options.channels.map((c) => `<button data-channel="${h(c)}">确认，自付部分用${h(CHANNEL[c] || c)}</button>`).join("")}</div>
      <p class="muted">自付部分未按时付款的，医保结算将自动冲正，不会重复扣费。</p><div class="error" id="err"></div></div>
      ${options.insurance_mobile ? `<div class="card mobile"><h2>医保移动支付（医保电子凭证）</h2>
        <p class="muted">在医保电子凭证中授权后，医保局按其结算拆分：统筹基金和个人账户直接扣款，现金部分在医保平台收银台支付。</p>
        <button id="mobile">医保移动支付（医保电子凭证）</button><div class="error" id="mobile-err"></div></div>` : ""}`, "bill");
    const mobile = document.getElementById("mobile");
    if (mobile) mobile.onclick = async () => {
      const err = document.getElementById("mobile-err");
      mobile.disabled = true;
      try {
        const order = await mobileOrder(ids);
        if (order) { location.hash = `#/mobile/${encodeURIComponent(order.settlement_id)}`; return; }
        err.textContent = "请在医保电子凭证中授权本次支付：正式环境由医保电子凭证的授权页返回授权后再下单（本环境没有沙箱授权）。";
      } catch (x) { fail(err, x); }
      mobile.disabled = false;
    };
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

  // a 医保移动支付 order: its split and the confirmation (presettled), then the cash part at the
  // platform's cashier (paying), followed until the settlement ends as the bureau's 6301 says
  async mobile(id) {
    const here = location.hash;
    const sandbox = sessionStorage.getItem("yhf.sandbox") === "1";
    let seen = null;
    const follow = async (note = "") => {
      clearTimeout(timer);
      const st = await api(`/v1/patient/insurance/settlements/${encodeURIComponent(id)}`);
      if (location.hash !== here) return;
      if (st.status !== seen) { seen = st.status; mobileScreen(st, sandbox); wire(st); }
      if (note) document.getElementById("err").textContent = note;
      if (st.status === "paying") {
        timer = setTimeout(() => follow().catch((x) => fail(document.getElementById("err"), x)), 2000);
      }
    };
    const wire = (st) => {
      const err = () => document.getElementById("err");
      const confirmPay = document.getElementById("mobile-pay");
      if (confirmPay) confirmPay.onclick = async () => {
        confirmPay.disabled = true;
        try {
          const out = await api(`/v1/patient/insurance/settlements/${encodeURIComponent(id)}/pay`,
            { method: "POST", body: { channel: "nhsa_mobile" }, key: `ins-${id}` });
          sessionStorage.setItem(`yhf.cashier.${id}`, out.cashier_url || "");
          await follow();
        } catch (x) { confirmPay.disabled = false; await follow(x.message).catch(() => fail(err(), x)); }
      };
      const cashier = document.getElementById("cashier"); // the sandbox plays the platform's cashier
      if (cashier) cashier.onclick = async () => {
        cashier.disabled = true;
        try {
          await api(`/v1/sandbox/insurance/settlements/${encodeURIComponent(st.settlement_id)}/cashier`, { method: "POST" });
          await follow();
        } catch (x) { cashier.disabled = false; fail(err(), x); }
      };
      const check = document.getElementById("check");
      if (check) check.onclick = () => follow().catch((x) => fail(err(), x));
    };
    await follow();
  },

  async receipts() {
    // the provincial platform's bill (财政电子票据) of a receipt version: its number, QR code and page
    const fiscal = (e) => !e || !e.bill_no ? "" : `<div class="muted">财政电子票据 ${h(e.bill_batch_code)} ${h(e.bill_no)}
        · 校验码 ${h(e.random)}${e.status === "written_off" ? " · 已冲红" : ""}</div>
        ${e.qr_code_png ? `<img class="qr" alt="票据二维码" width="96" height="96" src="data:image/png;base64,${h(e.qr_code_png)}">` : ""}
        ${e.picture_url ? `<a href="${h(e.picture_url)}" target="_blank" rel="noopener">查看财政电子票据 ›</a>` : ""}`;
    const list = await api("/v1/patient/receipts");
    show(`<h1>电子票据</h1>${list.length ? "" : '<div class="card muted">暂无票据：就诊结清后自动开具</div>'}
      ${list.map((r) => `<div class="card receipt"><h2>${h(r.department)} <span class="muted">${h(r.receipt_id)}</span>
        ${r.voided_at ? '<span class="status defaulted">已作废</span>' : ""}</h2>
        <div class="muted">${h(when(r.issued_at))} · 第 ${r.version} 版 · 校验码 ${h(r.check_code)}</div>
        <p>合计 ${yuan(r.total_fen)} · ${r.payments.map((p) => `${h(METHOD[p.method] || p.method)} ${yuan(p.amount_fen)}`).join("，")}</p>
        ${fiscal(r.ebill)}
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

  // bills and notices. Verification codes are not shown: signed in, the login code has been
  // used; an enrolment code proves the phone is at hand, so it must come by SMS, not through
  // the session it is meant to check (a shared or borrowed phone's app would see it)
  async messages() {
    const inbox = (await api("/v1/patient/notifications")).filter((m) => m.template !== "verification_code");
    show(`<h1>消息</h1>${inbox.length ? "" : '<div class="card muted">暂无消息</div>'}
      ${inbox.map((m) => {
        const kind = BILL_TEMPLATES.has(m.template) ? "bill" : "notice";
        return `<div class="card message" data-kind="${kind}"><span class="status ${kind === "bill" ? "due" : "open"}">${kind === "bill" ? "账单" : "通知"}</span>
          <div>${h(m.text)}</div><div class="muted">${h(when(m.sent_at))}${m.visit_id
            ? ` · <a href="#/visit/${encodeURIComponent(m.visit_id)}">查看就诊 ›</a>` : ""}</div></div>`;
      }).join("")}`, "messages");
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

// one 医保移动支付 attempt: the e-voucher's authorisation and the order's Idempotency-Key, kept
// together until the order answers, so a retry is the same order; a refusal starts a new attempt.
// Answers null where there is no sandbox: the real deployment sends the patient to the
// 医保电子凭证 authorisation page, which returns the payAuthNo (POST /v1/sandbox/insurance/pay-auth
// stands in for it in the sandbox only)
async function mobileOrder(ids) {
  const slot = `yhf.mobile.${ids.join(",")}`;
  let attempt = JSON.parse(sessionStorage.getItem(slot) || "null");
  if (!attempt) {
    const auth = await api("/v1/sandbox/insurance/pay-auth", { method: "POST" })
      .catch((x) => { if (x.status === 404) return null; throw x; });
    if (!auth) return null;
    sessionStorage.setItem("yhf.sandbox", "1");
    attempt = { pay_auth_no: auth.pay_auth_no, key: crypto.randomUUID() };
    sessionStorage.setItem(slot, JSON.stringify(attempt));
  }
  try {
    const order = await api("/v1/patient/insurance/mobile-orders",
      { method: "POST", body: { visit_ids: ids, pay_auth_no: attempt.pay_auth_no }, key: attempt.key });
    sessionStorage.removeItem(slot);
    return order;
  } catch (x) {
    if (x.status && x.status < 500) sessionStorage.removeItem(slot); // refused (or expired): authorise again
    throw x;
  }
}

// the bureau's split of a mobile order: the fund, the personal account and the cash part
function mobileSplit(st) {
  return `<table class="lines" id="mobile-split"><tr><td>费用合计</td><td class="money">${yuan(st.total_fen)}</td></tr>
    <tr><td>医保统筹基金支付</td><td class="money" id="fund">${yuan(st.pooled_fen)}</td></tr>
    <tr><td>医保个人账户支付</td><td class="money" id="account">${yuan(st.personal_fen)}</td></tr>
    <tr><td><strong>现金支付</strong></td><td class="money" id="cash">${yuan(st.self_pay_fen)}</td></tr></table>`;
}

function mobileScreen(st, sandbox) {
  const url = sessionStorage.getItem(`yhf.cashier.${st.settlement_id}`) || "";
  const cash = yuan(st.self_pay_fen);
  const ended = (title, id, text, back) => `<div class="card"><h1 id="${id}">${title}</h1>${text}
    <a class="btn" href="${back}">${back === "#/home" ? "返回" : "返回账单"}</a><div class="error" id="err"></div></div>`;
  let body;
  switch (st.status) {
    case "presettled":
      body = `<div class="card"><h1>医保移动支付</h1><p class="muted">医保局结算结果（医保电子凭证已授权）：</p>${mobileSplit(st)}
        <p class="muted">确认后统筹基金和个人账户即时支付${st.self_pay_fen ? `，现金部分 ${cash} 在医保平台收银台支付` : "，没有现金部分"}。现金部分未按时付款的，订单将撤销，不会扣款。</p>
        <button id="mobile-pay">确认支付</button><div class="error" id="err"></div></div>`;
      break;
    case "paying":
      body = `<div class="card"><h1>医保移动支付 · 支付中</h1>${mobileSplit(st)}
        ${!st.self_pay_fen ? '<p class="muted" id="waiting">统筹基金和个人账户已支付，正在等待医保局确认。</p>'
          : sandbox ? `<p class="muted">沙箱：点击下方按钮，模拟患者在医保平台收银台支付现金部分；平台随后通知医后付。</p>
            <button id="cashier">在医保平台收银台支付现金 ${cash}</button><p class="muted" id="waiting">支付结果将自动确认。</p>`
          : `${/^https?:/.test(url) ? `<a class="btn" id="away" href="${h(url)}" rel="noopener">前往医保平台收银台支付现金 ${cash}</a>` : ""}
            <p class="muted" id="waiting">在医保平台收银台付款后回到本页，支付结果将自动确认。</p>
            <button class="secondary" id="check">我已完成付款</button>`}
        <div class="error" id="err"></div></div>`;
      break;
    case "completed":
      sessionStorage.removeItem(`yhf.cashier.${st.settlement_id}`);
      body = ended("支付成功", "mobile-paid", `${mobileSplit(st)}<p>已付 ${yuan(st.total_fen)}，账单已结清。</p>`, "#/home");
      break;
    case "revoked":
      body = ended("支付未完成", "mobile-revoked", '<p>订单已撤销，没有扣款。请回到账单重新支付。</p>', "#/bill");
      break;
    case "failed":
      body = ended("支付失败", "mobile-failed", '<p>医保移动支付未成功，没有扣款（已扣的医保部分已退回）。请回到账单重新支付。</p>', "#/bill");
      break;
    default:
      body = ended("医保移动支付", "mobile-other", `<p>订单状态：${h(st.status)}</p>`, "#/bill");
  }
  show(body, "bill");
}

const earliest = (times) => times.filter(Boolean).sort((a, b) => new Date(a) - new Date(b))[0];

// what happens next for a patient who owes (home): the most urgent of their payable visits
function homeAdvice(me, payable, dueAt) {
  const statuses = new Set(payable.map((v) => v.payment_status));
  const held = payable.some((v) => v.hold);
  if (statuses.has("defaulted")) {
    return `欠费已逾期：${me.card_locked ? "医保卡已锁定，" : ""}欠费已报送征信平台。付清后自动解锁医保卡并更正征信记录；付清前不能挂号。`;
  }
  const lock = held ? "暂缓催收的费用在暂缓结束后继续计算期限。" : "";
  if (statuses.has("arrears")) {
    return `当日未付，已转为欠费，付清前不能挂号。请在 ${when(dueAt)} 前付清，逾期将锁定医保卡并上报征信。${lock}`;
  }
  const today = earliest(payable.map((v) => v.arrears_at));
  return `离院无需排队缴费：请${today ? `在 ${when(today)} 前` : "尽快"}付清，未付转为欠费（不能挂号）；${when(dueAt)} 前仍未付将锁定医保卡并上报征信。${lock}`;
}

// a visit's next step, from its stage AND its payment status (and a hold or an open dispute)
function nextStep(v) {
  const owe = yuan(v.bill.balance_fen);
  const owing = OWING.has(v.payment_status);
  if (v.dispute?.status === "open") {
    return `申诉处理中：暂停催缴、锁卡和征信上报，还款期限相应顺延；处理结果将通知您${owing ? `。待付 ${owe}` : ""}`;
  }
  if (v.hold && owing) {
    return `医院已暂缓催收${v.hold.until ? `至 ${when(v.hold.until)}` : ""}：期间不催缴、不锁卡、不上报征信；仍可在账单页付清 ${owe}`;
  }
  switch (v.payment_status) {
    case "due":
      return `离院无需排队缴费：请在账单页付清 ${owe}。${v.arrears_at ? `${when(v.arrears_at)} 前未付转为欠费；` : ""}${when(v.due_at)} 前仍未付将锁定医保卡并上报征信`;
    case "arrears":
      return `已转为欠费：请尽快在账单页付清 ${owe}，付清前不能挂号；${when(v.due_at)} 前未付将锁定医保卡并上报征信`;
    case "defaulted":
      return `已逾期：${v.card_locked ? "医保卡已锁定，" : ""}${v.credit_reported ? "欠费已上报征信" : "逾期欠费将上报征信"}。在账单页付清 ${owe} 后自动${v.card_locked ? "解锁" : "恢复"}${v.credit_reported ? "并更正征信记录" : ""}`;
    case "settled":
      return v.stage === "discharged" ? "费用已结清，无需再付款" : `${NEXT[v.stage]}（目前费用已结清）`;
    case "written_off":
      return "医院已核销此次费用，无需再付款";
    default: // open: still in the hospital; the bill is paid after leaving
      return NEXT[v.stage];
  }
}

// the timeline in the order the steps happened, at the HIS's times as recorded; registration
// (our own clock) is shown no later than the first step after it, so time never runs backwards
function timeline(v) {
  const steps = [{ label: "挂号", at: v.created_at }, ...v.events.map((e) => ({ label: EVENTS[e.type] || e.type, at: e.occurred_at }))];
  for (let i = steps.length - 2; i >= 0; i--) {
    if (new Date(steps[i].at) > new Date(steps[i + 1].at)) steps[i] = { ...steps[i], at: steps[i + 1].at };
  }
  return steps.map((s) => `<li>${h(s.label)} · ${h(when(s.at))}</li>`).join("");
}

// a visit's dispute (申诉): its status, or the form to open one while the bill is unpaid
function disputeCard(v) {
  const d = v.dispute;
  const open = d && d.status === "open";
  const status = d ? `<p id="dispute-status">${h(open ? DISPUTE.open : DISPUTE[d.outcome])} · ${h(when(d.resolved_at || d.opened_at))}</p>
      <p class="muted">理由：${h(d.reason)}${d.note ? `<br>处理意见：${h(d.note)}` : ""}</p>` : "";
  const hold = open ? '<p class="muted">申诉处理期间暂停催缴、锁卡和征信上报，还款期限相应顺延。</p>' : "";
  const form = !open && OWING.has(v.payment_status) ? `<label for="dispute-reason">对账单或处罚有异议？</label>
      <input id="dispute-reason" maxlength="200" placeholder="请写明申诉理由">
      <button class="secondary" id="dispute-send">申诉</button><div class="error" id="dispute-err"></div>` : "";
  return status || form ? `<div class="card" id="dispute"><h2>申诉</h2>${status}${hold}${form}</div>` : "";
}

// a bill's lines; `running`: the visit is still in progress, so its balance is not due yet
function lines(bill, running = false) {
  const reversed = new Set(bill.lines.filter((l) => l.kind === "reversal").map((l) => l.item_id));
  const rows = bill.lines.filter((l) => l.kind === "charge").map((l) =>
    `<tr class="${reversed.has(l.item_id) ? "cancelled" : ""}"><td>${h(l.name)}<span class="muted"> ${h(CATEGORY[l.category] || "")}${l.quantity > 1 ? ` ×${l.quantity}` : ""}</span></td><td class="money">${yuan(l.amount_fen)}</td></tr>`).join("");
  return `<table class="lines">${rows}
    <tr><td>合计</td><td class="money">${yuan(bill.total_fen)}</td></tr>
    <tr><td>已付</td><td class="money">${yuan(bill.paid_fen)}</td></tr>
    ${bill.waived_fen ? `<tr><td>减免</td><td class="money" id="waived">${yuan(bill.waived_fen)}</td></tr>` : ""}
    ${(bill.payments || []).filter((p) => p.kind !== "payment").map((p) =>
      `<tr class="muted"><td>${p.kind === "refund" ? "退款" : "退款未成功，已退回账单"} · ${h(METHOD[p.method] || p.method || "")}</td><td class="money">${yuan(p.amount_fen)}</td></tr>`).join("")}
    <tr><td><strong>${running ? "离院后待付" : "待付"}</strong></td><td class="money">${yuan(bill.balance_fen)}</td></tr></table>`;
}

async function route() {
  clearTimeout(timer);
  const [, name = "home", ...args] = location.hash.replace(/^#/, "").split("/");
  const screen = screens[name] || screens.home;
  if (!token() && name !== "login") { location.hash = "#/login"; return; }
  try {
    await labels();
    if (!["login", "profiles", "identity"].includes(name)) await bound();
    await screen(...args.map(decodeURIComponent));
  } catch (x) {
    if (x.status !== 401) show(`<div class="card error">出错了：${h(x.message)}</div>`);
  }
}

window.addEventListener("hashchange", route);
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
route();
