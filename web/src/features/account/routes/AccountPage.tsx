import { useTranslation } from "react-i18next";
import { useUser } from "@/lib/auth";
import { AccountFrame } from "../components/AccountFrame";
import { PasswordForm } from "../components/PasswordForm";
import { ProfileForm } from "../components/ProfileForm";
import { MyPlugins } from "../components/MyPlugins";
import { useMe } from "../api/account";

export default function AccountPage() {
  const { t } = useTranslation("account");
  const signedIn = useUser();
  const me = useMe();
  return (
    <AccountFrame title={t("profile.title")}>
      <ProfileForm user={me.data ?? signedIn} />
      <MyPlugins />
      <PasswordForm username={signedIn.username} />
    </AccountFrame>
  );
}
